/* Stand-in for a marketing/advertising pixel. The page ships it as
   <script type="text/plain" data-consent="marketing">, so it only runs after
   the visitor consents to marketing and the banner activates it. */
(function () {
  "use strict";
  window.demoMarketingLoaded = true;
  document.cookie = "_mk_js=1; path=/; max-age=7776000; samesite=lax";
  function mark() {
    document.body.setAttribute("data-marketing", "on");
  }
  // Activation may happen before <body> exists if a banner runs early.
  if (document.body) {
    mark();
  } else {
    document.addEventListener("DOMContentLoaded", mark);
  }
})();
