/* Stand-in for a third-party analytics tag. The page ships it as
   <script type="text/plain" data-consent="analytics">, so it only runs after
   the visitor consents to analytics and the banner activates it. */
(function () {
  "use strict";
  window.demoAnalyticsLoaded = true;
  document.cookie = "_pa_js=1; path=/; max-age=31536000; samesite=lax";
  function mark() {
    document.body.setAttribute("data-analytics", "on");
  }
  // Activation may happen before <body> exists if a banner runs early.
  if (document.body) {
    mark();
  } else {
    document.addEventListener("DOMContentLoaded", mark);
  }
})();
