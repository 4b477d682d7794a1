// Ticks the server-computed "time left" on a dispute page down each minute (the server's text stays
// the truth for browsers without script).
(function () {
  "use strict";
  var clocks = document.querySelectorAll("[data-countdown]");
  function tick() {
    clocks.forEach(function (clock) {
      var left = Math.floor((Date.parse(clock.getAttribute("datetime")) - Date.now()) / 1000);
      if (left <= 0) { clock.textContent = clock.getAttribute("data-passed-label"); return; }
      var hours = Math.floor(left / 3600);
      var minutes = Math.floor((left % 3600) / 60);
      // The server's own translated format, e.g. "%(hours)d h %(minutes)02d min left".
      clock.textContent = clock.getAttribute("data-format")
        .replace("%(hours)d", String(hours))
        .replace("%(minutes)02d", (minutes < 10 ? "0" : "") + minutes);
    });
  }
  if (clocks.length) { tick(); window.setInterval(tick, 30000); }
})();
