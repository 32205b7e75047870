/* consent-gateway tracker: page views, SPA navigations and custom events via sendBeacon. */
(function () {
  "use strict";
  var root = document.getElementById("cg-root");
  var prefix = (root && root.getAttribute("data-cg-prefix")) || "/_consent";
  function send(name, props) {
    var body = JSON.stringify({ name: name, url: location.pathname + location.search, referrer: document.referrer || "", props: props || undefined });
    if (navigator.sendBeacon) navigator.sendBeacon(prefix + "/collect", body);
    else fetch(prefix + "/collect", { method: "POST", body: body, keepalive: true, credentials: "same-origin" });
  }
  var cg = window.consentGateway = window.consentGateway || {};
  cg.track = function (name, props) { send(name, props); };
})();
