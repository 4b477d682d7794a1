// The stock-upload page: polls the upload's JSON status and moves the progress bar until it ends.
(function () {
  "use strict";
  var box = document.querySelector("[data-upload-progress]");
  if (!box) return;
  var url = box.getAttribute("data-upload-progress");
  var delay = 400;

  function field(name) { return box.querySelector('[data-field="' + name + '"]'); }

  function show(state) {
    var bar = field("bar");
    var running = state.status === "running";
    bar.max = Math.max(state.total, 1);
    bar.value = running ? state.processed : bar.max;
    bar.textContent = state.percent + "%";
    ["processed", "total", "imported", "duplicates", "rejected"].forEach(function (name) {
      field(name).textContent = state[name];
    });
    var label = box.querySelector('[data-label="' + state.status + '"]');
    var status = field("status");
    status.textContent = label ? label.textContent : state.status;
    status.setAttribute("data-status", state.status);
    var error = field("error");
    error.textContent = state.error || "";
    error.hidden = !state.error;
    field("finished").hidden = running;
    return running;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (state) {
        if (show(state)) {
          delay = Math.min(delay * 1.2, 3000);
          window.setTimeout(poll, delay);
        }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }

  poll();
})();
