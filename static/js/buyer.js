// The buyer's pages: the live total on the product page, "copy all" keys and the question before
// "Confirm receipt" on the order page. No inline script anywhere (the Content-Security-Policy).
(function () {
  "use strict";

  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
      return;
    }
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }

  // --- product page: quantity → unit price (wholesale tier) and total -------------------------------
  var form = document.querySelector("form[data-checkout]");
  if (form) {
    var tiers = (form.getAttribute("data-tiers") || "").split(",").filter(Boolean).map(function (pair) {
      var parts = pair.split(":");
      return { min: parseInt(parts[0], 10), price: parseInt(parts[1], 10) };
    });
    var quantity = form.querySelector("input[name=quantity]");
    var total = form.querySelector("[data-total]");
    var unitLine = form.querySelector("[data-unit-line]");
    var symbol = form.getAttribute("data-symbol");
    var currency = form.getAttribute("data-currency");
    var eachFormat = unitLine ? unitLine.getAttribute("data-format") || "" : "";
    var money = function (minor) {
      return symbol + (minor / 100).toFixed(2) + " " + currency;
    };
    var update = function () {
      var count = parseInt(quantity.value, 10);
      if (!(count >= 1)) count = 1;
      var unit = parseInt(form.getAttribute("data-price"), 10);
      tiers.forEach(function (tier) { if (count >= tier.min) unit = tier.price; });
      total.textContent = money(unit * count);
      if (unitLine && eachFormat) unitLine.textContent = eachFormat.replace("%(price)s", money(unit));
    };
    quantity.addEventListener("input", update);
    update();
  }

  // --- order page -----------------------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy-all");
    if (!button) return;
    var keys = Array.prototype.map.call(document.querySelectorAll("[data-testid=key]"), function (node) {
      return node.textContent;
    });
    copyText(keys.join("\n"), function () {
      button.textContent = button.getAttribute("data-copied-label");
      button.classList.add("copied");
    });
  });

  // "Confirm receipt" pays the merchant: ask once more (the form works without script, too).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
