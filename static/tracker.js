/* consent-gateway tracker: SPA page views and custom events via sendBeacon to {prefix}/collect.
   The gateway already logs every page it serves, so the first view of a page it served (one
   carrying #cg-root) is not sent again; history.pushState and popstate count as page views.
   Events the server would drop (a category whose policy is "drop" and is not granted, e.g.
   marketing without marketing consent) are never sent. */
(function (w, d) {
  "use strict";
  var root = d.getElementById("cg-root");
  var prefix = (root && root.getAttribute("data-cg-prefix")) || "/_consent";
  var conf = { e: {}, p: [], u: "analytics", d: ["marketing"] };
  try { if (root) conf = JSON.parse(root.getAttribute("data-cg-track")) || conf; } catch (e) { /* keep defaults */ }
  var cg = (w.consentGateway = w.consentGateway || {});
  var last = w.location.pathname + w.location.search;

  function granted() {
    if (cg.get) return cg.get().categories;
    return ((root && root.getAttribute("data-cg-granted")) || "").split(" ");
  }

  function category(name) {
    if (conf.e.hasOwnProperty(name)) return conf.e[name];
    for (var i = 0; i < conf.p.length; i++) if (new RegExp(conf.p[i][0]).test(name)) return conf.p[i][1];
    return conf.u;
  }

  function send(name, props) {
    if (typeof name !== "string" || !name) return false;
    var cat = category(name);
    if (conf.d.indexOf(cat) !== -1 && granted().indexOf(cat) === -1) return false;
    var body = JSON.stringify({ name: name, url: w.location.pathname + w.location.search, referrer: d.referrer || "", props: props || {} });
    var url = prefix + "/collect";
    if (w.navigator.sendBeacon && w.navigator.sendBeacon(url, body)) return true;
    w.fetch(url, { method: "POST", body: body, keepalive: true, credentials: "same-origin", headers: { "Content-Type": "application/json" } });
    return true;
  }

  function view() {
    var now = w.location.pathname + w.location.search;
    if (now === last) return;
    last = now;
    send("pageview");
  }

  var push = w.history.pushState;
  w.history.pushState = function () {
    var out = push.apply(this, arguments);
    view();
    return out;
  };
  w.addEventListener("popstate", view);
  cg.track = send;
  if (!root) send("pageview");
})(window, document);
