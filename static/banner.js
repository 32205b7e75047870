/* consent-gateway banner: progressive enhancement of the server-rendered form. No dependencies. */
(function () {
  "use strict";
  var root = document.getElementById("cg-root");
  if (!root) return;
  var prefix = root.getAttribute("data-cg-prefix") || "/_consent";
  var granted = (root.getAttribute("data-cg-granted") || "").split(" ").filter(Boolean);
  var listeners = [];

  function allows(cat) { return granted.indexOf(cat) !== -1; }

  function activate() {
    var nodes = document.querySelectorAll("script[type='text/plain'][data-consent]");
    for (var i = 0; i < nodes.length; i++) {
      var old = nodes[i];
      if (!allows(old.getAttribute("data-consent"))) continue;
      var s = document.createElement("script");
      for (var j = 0; j < old.attributes.length; j++) {
        var a = old.attributes[j];
        if (a.name !== "type" && a.name !== "data-src") s.setAttribute(a.name, a.value);
      }
      var src = old.getAttribute("data-src") || old.getAttribute("src");
      if (src) s.src = src; else s.text = old.text;
      old.parentNode.replaceChild(s, old);
    }
  }

  function emit() {
    for (var i = 0; i < listeners.length; i++) {
      try { listeners[i](granted.slice()); } catch (e) { /* a page listener must not break the banner */ }
    }
  }

  function post(body) {
    return fetch(prefix + "/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) throw new Error("consent request failed: " + r.status);
      return r.json();
    });
  }

  function onSubmit(ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("cg-form")) return;
    ev.preventDefault();
    var action = ev.submitter ? ev.submitter.value : "save";
    var cats = [];
    var boxes = form.querySelectorAll("input[name='categories']:checked");
    for (var i = 0; i < boxes.length; i++) cats.push(boxes[i].value);
    var locale = (form.querySelector("input[name='locale']") || {}).value;
    post({ action: action, categories: cats, locale: locale }).then(function (res) {
      granted = res.categories;
      root.setAttribute("data-cg-status", res.status);
      root.setAttribute("data-cg-granted", granted.join(" "));
      var banner = document.getElementById("cg-banner");
      if (banner) banner.parentNode.removeChild(banner);
      activate();
      emit();
    }).catch(function () { form.submit(); });
  }

  document.addEventListener("submit", onSubmit);
  window.consentGateway = {
    get: function () { return { status: root.getAttribute("data-cg-status"), categories: granted.slice() }; },
    on: function (name, fn) { if (name === "change" && typeof fn === "function") listeners.push(fn); },
    open: function () { window.location.href = prefix + "/?return_to=" + encodeURIComponent(location.pathname); }
  };
  activate();
})();
