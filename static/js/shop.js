// The shop's only script: language switch, copy buttons, and the order page waiting for its keys.
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var done = function () {
      button.textContent = button.getAttribute("data-copied-label");
      button.classList.add("copied");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  });

  var box = document.querySelector("[data-poll-status]");
  if (!box) return;
  var statusUrl = box.getAttribute("data-poll-status");
  var keysUrl = box.getAttribute("data-keys-url");
  var waitingStates = ["awaiting_payment", "paid"];
  var delay = 300;

  function poll() {
    fetch(statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (state) {
        var label = document.querySelector("[data-testid=status]");
        if (label && state.label) label.textContent = state.label;
        if (state.has_keys) {
          return fetch(keysUrl, { credentials: "same-origin" })
            .then(function (response) { return response.text(); })
            .then(function (html) {
              box.innerHTML = html;
              box.removeAttribute("data-poll-status");
            });
        }
        if (waitingStates.indexOf(state.status) === -1) { window.location.reload(); return; }
        delay = Math.min(delay * 1.2, 3000);
        window.setTimeout(poll, delay);
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, delay);
})();
