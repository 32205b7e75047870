/* consent-gateway banner. Takes over the server-rendered first layer, builds the second layer
   from GET {prefix}/state, gates scripts and iframes, and offers window.consentGateway.
   Plain ES5, no dependencies, no build step. Text only ever enters the page through DOM APIs
   (createTextNode, setAttribute), never innerHTML; no eval, no inline style: strict-CSP safe.
   Page API: consentGateway.get() -> {status, categories, gpc}; .on("change", fn) where fn gets
   {status, categories, revoked[, withdrawn]} (also a "consentgateway:change" DOM event); .open();
   .withdraw(). Gated markup: <script type="text/plain" data-consent="analytics" src|data-src>
   and <iframe data-consent="marketing" data-src>. Any element with data-cg-open-settings opens
   the settings layer (the site's own control when settings_button = "none"). */
(function (w, d) {
  "use strict";
  var me = d.currentScript;
  var nonce = (me && me.nonce) || "";
  var api = (w.consentGateway = w.consentGateway || {});
  var listeners = [];
  var ran = {}; // categories whose gated scripts or iframes were activated on this page
  var root, link, live, wrap, opener, state;
  var prefix = "/_consent";
  var status = (me && me.getAttribute("data-cg-status")) || "unset";
  var granted = words(me && me.getAttribute("data-cg-granted"));
  var locale = "ko";
  var inerted = [];
  // Google Consent Mode v2: which signals each category grants.
  var GCM = {
    analytics: ["analytics_storage"],
    marketing: ["ad_storage", "ad_user_data", "ad_personalization"],
    preferences: ["functionality_storage", "personalization_storage"]
  };
  var gcm = !!(me && me.hasAttribute("data-cg-gcm"));

  function words(s) { return (s || "").split(" ").filter(Boolean); }
  function has(list, x) { return list.indexOf(x) !== -1; }
  function gtag() { w.dataLayer.push(arguments); }
  function signals(cats) {
    var out = {};
    for (var k in GCM) for (var i = 0; i < GCM[k].length; i++) out[GCM[k][i]] = has(cats, k) ? "granted" : "denied";
    return out;
  }

  if (gcm) {
    // Loaded synchronously at the top of <head>: the defaults precede every tag on the page.
    w.dataLayer = w.dataLayer || [];
    var base = signals([]);
    base.security_storage = "granted";
    base.wait_for_update = 500;
    gtag("consent", "default", base);
    if (status === "given") gtag("consent", "update", signals(granted));
  }

  /* An element with attributes and children (strings become text nodes). */
  function h(tag, attrs, kids) {
    var el = d.createElement(tag);
    for (var k in attrs) if (attrs[k] != null && attrs[k] !== false) el.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    for (var i = 0; kids && i < kids.length; i++) {
      if (kids[i] != null) el.appendChild(typeof kids[i] === "string" ? d.createTextNode(kids[i]) : kids[i]);
    }
    return el;
  }

  function here() { return w.location.pathname + w.location.search; }
  function settingsUrl(loc) {
    return prefix + "/?return_to=" + encodeURIComponent(here()) + "&locale=" + loc;
  }

  /* Run gated scripts and load gated iframes whose categories are all granted. */
  function activate() {
    var nodes = d.querySelectorAll("script[type='text/plain'][data-consent],iframe[data-consent][data-src]");
    for (var i = 0; i < nodes.length; i++) {
      var old = nodes[i], cats = words(old.getAttribute("data-consent"));
      if (!cats.length || !cats.every(function (c) { return has(granted, c); })) continue;
      cats.forEach(function (c) { ran[c] = 1; });
      var src = old.getAttribute("data-src") || old.getAttribute("src");
      if (old.tagName === "IFRAME") {
        old.removeAttribute("data-src");
        old.setAttribute("src", src);
        continue;
      }
      var s = d.createElement("script");
      for (var j = 0; j < old.attributes.length; j++) {
        var a = old.attributes[j];
        if (a.name !== "type" && a.name !== "data-src" && a.name !== "src") s.setAttribute(a.name, a.value);
      }
      if (nonce) s.nonce = nonce;
      s.async = false; // keep the page's order between activated scripts
      if (src) s.src = src;
      else s.text = old.text;
      old.parentNode.replaceChild(s, old);
    }
  }

  function emit(detail) {
    for (var i = 0; i < listeners.length; i++) {
      try { listeners[i](detail); } catch (e) { if (w.console) w.console.error(e); } // a page listener must not break the banner
    }
    try { d.dispatchEvent(new CustomEvent("consentgateway:change", { detail: detail })); } catch (e) { /* old browsers */ }
  }

  function post(path, body) {
    return w.fetch(prefix + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) throw new Error("consent gateway answered " + r.status);
      return r.json();
    });
  }

  function load() {
    if (state) return Promise.resolve(state);
    return w.fetch(prefix + "/state", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("consent gateway answered " + r.status);
        return r.json();
      })
      .then(function (s) { state = s; return s; });
  }

  function remove(el) { if (el && el.parentNode) el.parentNode.removeChild(el); }

  /* The server answered a choice: tell the page, start what is now allowed, reload if something was revoked. */
  function applied(res) {
    var revoked = Object.keys(ran).filter(function (c) { return !has(res.categories, c); });
    status = res.status;
    granted = res.categories.slice().sort();
    state = null;
    root.setAttribute("data-cg-status", status);
    root.setAttribute("data-cg-granted", granted.join(" "));
    if (gcm) gtag("consent", "update", signals(granted));
    remove(d.getElementById("cg-banner"));
    closePrefs(false);
    if (link) link.focus();
    live.textContent = root.getAttribute("data-cg-saved") || "";
    emit({ status: status, categories: granted.slice(), revoked: revoked });
    // Scripts that already ran cannot be unloaded: a reload leaves only the allowed ones running.
    if (revoked.length) w.location.reload();
    else activate();
  }

  function choose(form, action) {
    var cats = [];
    var boxes = form.querySelectorAll("input[name='categories']:checked");
    for (var i = 0; i < boxes.length; i++) cats.push(boxes[i].value);
    post("/", { action: action, categories: cats, locale: locale }).then(applied, function () {
      // The fetch failed: fall back to the plain form post, which works without JavaScript.
      form.appendChild(h("input", { type: "hidden", name: "action", value: action }));
      form.submit();
    });
  }

  function withdraw() {
    post("/withdraw", { locale: locale }).then(function () {
      status = "unset";
      granted = [];
      emit({ status: status, categories: [], revoked: Object.keys(ran), withdrawn: true });
      // The server expired the cookies; a reload stops every script and shows the banner again.
      w.location.reload();
    }, function () { w.location.href = settingsUrl(locale); });
  }

  function choice(action, text) {
    return h("button", { type: "submit", "class": "cg-button", name: "action", value: action }, [text]);
  }

  function category(c, T, picks) {
    var k = c.key;
    var off = c.refused_by_gpc || c.refused_for_child;
    var on = c.required || (!off && (picks ? has(picks, k) : status === "given" && c.granted));
    return h("div", { "class": "cg-category" }, [
      h("input", {
        type: "checkbox", "class": "cg-switch", id: "cg-cat-" + k, name: "categories", value: k,
        "aria-describedby": "cg-desc-" + k, checked: on, disabled: c.required || off
      }),
      h("label", { "for": "cg-cat-" + k, "class": "cg-category-name" }, [
        c.name[locale], c.required ? h("span", { "class": "cg-always" }, [" (" + T.always_on + ")"]) : null
      ]),
      h("div", { id: "cg-desc-" + k, "class": "cg-desc" }, [
        h("p", { "class": "cg-description" }, [c.description[locale]]),
        c.cookies.length ? h("p", { "class": "cg-cookies" }, [T.cookies + ": " + c.cookies.join(", ")]) : null
      ])
    ]);
  }

  /* One layer from /state: the first (full = false) or the second with its toggles (full = true). */
  function build(full, picks) {
    var T = state.texts[locale];
    var other = locale === "ko" ? "en" : "ko";
    var id = full ? "cg-prefs" : "cg-banner";
    var title = full ? "cg-prefs-title" : "cg-title";
    var text = full ? "cg-prefs-text" : "cg-text";
    var policy = state.policy.url ? [" ", h("a", { href: state.policy.url }, [T.policy_link])] : [];
    // The text scrolls inside .cg-body; the choices below it stay in view on every screen.
    var kids = [
      h("div", { "class": "cg-head" }, [
        h("h2", { id: title, "class": "cg-title" }, [full ? T.settings_link : T.title]),
        h("a", { "class": "cg-lang", href: settingsUrl(other), lang: other, hreflang: other, "data-cg-lang": other }, [T.other_language]),
        full ? h("button", { type: "button", "class": "cg-close", "data-cg-close": true }, [T.close]) : null
      ]),
      h("p", { id: text, "class": "cg-text" }, [T.text].concat(policy))
    ];
    if (state.child_notice) kids.push(h("p", { "class": "cg-notice cg-child" }, [state.child_notice[locale]]));
    if (state.gpc) kids.push(h("p", { "class": "cg-notice cg-gpc" }, [T.gpc_notice]));
    var up = state.upcoming;
    if (up) {
      kids.push(h("p", { "class": "cg-notice cg-upcoming" }, [
        T.upcoming_notice.replace("{version}", up.version).replace("{date}", up.effective)
      ]));
    }
    if (full) {
      kids.push(h("div", { "class": "cg-categories" }, state.categories_info.map(function (c) { return category(c, T, picks); })));
      var L = state.links[locale];
      kids.push(h("p", { "class": "cg-links" }, [
        h("a", { href: prefix + "/cookies?lang=" + locale }, [L.cookies]), " · ",
        h("a", { href: prefix + "/my-data" }, [L.my_data])
      ]));
    }
    if (full && status !== "unset") {
      kids.push(h("p", { "class": "cg-extra" }, [
        h("button", { type: "button", "class": "cg-close", "data-cg-withdraw": true }, [T.withdraw]), " ",
        h("a", { href: prefix + "/receipts" }, [T.receipts])
      ]));
    }
    kids = [
      h("input", { type: "hidden", name: "return_to", value: here() }),
      h("input", { type: "hidden", name: "locale", value: locale }),
      h("div", { "class": "cg-body" }, kids),
      h("div", { "class": "cg-actions" }, [
        choice("accept_all", T.accept),
        choice("reject_all", T.reject),
        full ? choice("save", T.save)
          : h("button", { type: "submit", "class": "cg-button", formmethod: "get", formaction: prefix + "/", "data-cg-settings": true }, [T.settings])
      ])
    ];
    return h("section", {
      id: id, "class": id, role: "dialog", "aria-modal": full ? "true" : "false", "aria-labelledby": title,
      "aria-describedby": text, lang: locale, tabindex: "-1"
    }, [h("form", { method: "post", action: prefix + "/", "class": "cg-form" }, kids)]);
  }

  function picked() {
    var out = [], boxes = wrap.querySelectorAll("input[name='categories']:checked");
    for (var i = 0; i < boxes.length; i++) out.push(boxes[i].value);
    return out;
  }

  /* Keep focus in the modal layer: everything else on the page is inert while it is open. */
  function setInert(on) {
    if (on) {
      var kids = d.body.children;
      for (var i = 0; i < kids.length; i++) {
        if (kids[i] !== wrap && !kids[i].inert) { kids[i].inert = true; inerted.push(kids[i]); }
      }
    } else {
      while (inerted.length) inerted.pop().inert = false;
    }
  }

  function showPrefs(picks) {
    remove(wrap);
    setInert(false);
    wrap = h("div", { id: "cg-prefs-wrap", "class": "cg-root cg-overlay", lang: locale }, [build(true, picks)]);
    d.body.appendChild(wrap);
    setInert(true);
    d.getElementById("cg-prefs").focus();
  }

  function openPrefs(from) {
    opener = from;
    load().then(function () { showPrefs(null); }, function () { w.location.href = settingsUrl(locale); });
  }

  function closePrefs(restore) {
    if (!wrap) return;
    setInert(false);
    remove(wrap);
    wrap = null;
    if (restore === false) return;
    var back = opener && d.body.contains(opener) ? opener : d.querySelector("#cg-banner [data-cg-settings]") || link;
    if (back) back.focus();
  }

  function swap(layer, full, picks) {
    if (!layer) return;
    layer.replaceChild(build(full, picks).firstChild, layer.firstChild);
    layer.setAttribute("lang", locale);
    if (full) wrap.setAttribute("lang", locale);
  }

  function switchLang(code) {
    load().then(function () {
      var picks = wrap ? picked() : null;
      locale = code;
      root.setAttribute("data-cg-locale", code);
      root.setAttribute("lang", code);
      root.setAttribute("data-cg-saved", state.texts[code].saved);
      if (link) {
        link.textContent = state.texts[code].settings_link;
        link.setAttribute("href", settingsUrl(code));
      }
      // Swap the contents, not the layers: no second entrance animation, the modal stays put.
      swap(d.getElementById("cg-banner"), false, null);
      if (wrap) swap(d.getElementById("cg-prefs"), true, picks);
      var target = (wrap || d.getElementById("cg-banner") || root).querySelector("[data-cg-lang]");
      if (target) target.focus();
    }, function () { w.location.href = settingsUrl(code); });
  }

  function focusables() {
    return [].filter.call(
      wrap.querySelectorAll("a[href],button:not([disabled]),input:not([disabled]):not([type='hidden'])"),
      function (el) { return el.offsetParent !== null; }
    );
  }

  function onKey(ev) {
    if (!wrap) {
      // The settings link acts as a button (it opens a dialog): Space activates it too.
      if (ev.key === " " && ev.target === link) { ev.preventDefault(); link.click(); }
      return;
    }
    if (ev.key === "Escape") { ev.preventDefault(); closePrefs(); return; }
    if (ev.key !== "Tab") return;
    var f = focusables();
    if (!f.length) return;
    var a = d.activeElement, first = f[0], last = f[f.length - 1], inside = wrap.contains(a) && a !== wrap.firstChild;
    if (ev.shiftKey && (a === first || !inside)) { ev.preventDefault(); last.focus(); }
    else if (!ev.shiftKey && (a === last || !wrap.contains(a))) { ev.preventDefault(); first.focus(); }
  }

  function onClick(ev) {
    var own = ev.target.closest && ev.target.closest("[data-cg-open-settings]");
    if (own && !(wrap && wrap.contains(own))) { ev.preventDefault(); openPrefs(own); return; }
    var el = ev.target.closest && ev.target.closest("[data-cg-open],[data-cg-settings],[data-cg-lang],[data-cg-close],[data-cg-withdraw]");
    if (!el || !(root.contains(el) || (wrap && wrap.contains(el)))) return;
    ev.preventDefault();
    if (el.hasAttribute("data-cg-lang")) switchLang(el.getAttribute("data-cg-lang"));
    else if (el.hasAttribute("data-cg-close")) closePrefs();
    else if (el.hasAttribute("data-cg-withdraw")) withdraw();
    else openPrefs(el);
  }

  function onSubmit(ev) {
    var form = ev.target;
    if (!(root.contains(form) || (wrap && wrap.contains(form)))) return;
    ev.preventDefault();
    var btn = ev.submitter;
    choose(form, btn && btn.value ? btn.value : "save");
  }

  api.get = function () {
    return { status: status, categories: granted.slice(), gpc: !!root && root.getAttribute("data-cg-gpc") === "1" };
  };
  api.on = function (name, fn) {
    if (name === "change" && typeof fn === "function") listeners.push(fn);
    return api;
  };
  api.open = function () { if (root) openPrefs(null); };
  api.withdraw = function () { if (root) withdraw(); };

  function init() {
    root = d.getElementById("cg-root");
    if (!root) return;
    prefix = root.getAttribute("data-cg-prefix") || prefix;
    status = root.getAttribute("data-cg-status") || status;
    granted = words(root.getAttribute("data-cg-granted"));
    locale = root.getAttribute("data-cg-locale") || locale;
    link = root.querySelector("[data-cg-open]");
    if (link) {
      link.setAttribute("role", "button");
      link.setAttribute("aria-haspopup", "dialog");
    }
    live = h("p", { "class": "cg-sr", role: "status" });
    root.appendChild(live);
    d.addEventListener("click", onClick);
    d.addEventListener("submit", onSubmit);
    d.addEventListener("keydown", onKey);
    var first = d.getElementById("cg-banner");
    if (first && (!d.activeElement || d.activeElement === d.body)) first.focus({ preventScroll: true });
    activate();
  }

  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", init);
  else init();
})(window, document);
