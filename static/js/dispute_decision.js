// The staff decision form: show the buyer's percentage and the split preview only when "split" is
// chosen. Without JavaScript both stay visible and the server checks the percentage.
(function () {
  "use strict";
  var form = document.querySelector("[data-split-preview]");
  if (!form) return;
  var splitOnly = form.querySelector("[data-split-only]");
  var choices = form.querySelectorAll('input[name="outcome"]');

  function update() {
    var chosen = form.querySelector('input[name="outcome"]:checked');
    splitOnly.hidden = !(chosen && chosen.value === "split");
  }

  Array.prototype.forEach.call(choices, function (choice) { choice.addEventListener("change", update); });
  update();
})();
