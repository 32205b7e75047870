/* Progressive enhancement for the 팔레트 demo site. Everything here is optional:
   the pages are complete without JavaScript. No inline styles are written, so
   the site stays compatible with a strict Content-Security-Policy. */
(function () {
  "use strict";

  // The server already marks the current page; this covers pages reached via
  // paths it does not know about (e.g. a trailing slash).
  function highlightNav() {
    var nav = document.querySelector(".site-nav");
    if (!nav || nav.querySelector("[aria-current='page']")) {
      return;
    }
    var path = window.location.pathname.replace(/\/+$/, "") || "/";
    var links = nav.querySelectorAll("a[href]");
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute("href") === path) {
        links[i].setAttribute("aria-current", "page");
      }
    }
  }

  // Client-side filter for data tables; the box stays hidden without JS.
  function wireTableFilters() {
    var boxes = document.querySelectorAll("[data-table-filter]");
    Array.prototype.forEach.call(boxes, function (box) {
      var input = box.querySelector("input[data-filter-target]");
      var table = input && document.getElementById(input.getAttribute("data-filter-target"));
      if (!table || !table.tBodies.length) {
        return;
      }
      var rows = table.tBodies[0].rows;
      input.addEventListener("input", function () {
        var needle = input.value.trim().toLowerCase();
        for (var i = 0; i < rows.length; i++) {
          var text = rows[i].textContent.toLowerCase();
          rows[i].hidden = needle !== "" && text.indexOf(needle) === -1;
        }
      });
      box.hidden = false;
    });
  }

  document.documentElement.classList.add("js");
  highlightNav();
  wireTableFilters();
})();
