"""The server-rendered banner: a plain form that works with scripts off, injected into HTML pages.

Two layers. The first (``#cg-banner``) has the short text, the privacy-policy link and three
controls of equal weight: accept all, reject all, settings. The second (the settings page at
``{prefix}/`` without JavaScript, a modal dialog built by ``static/banner.js`` with it) lists one
toggle per category with its description and the cookies the registry names for it. In both, the
text and toggles sit in ``.cg-body`` and the choices in ``.cg-actions`` after it, so the CSS can let
the text scroll while every choice stays in view, from a 320 px phone to 200% zoom on a desktop.

With JavaScript on, ``static/banner.js`` takes the first layer over (fetch instead of a page load,
script gating without a reload) and builds the second from ``GET {prefix}/state``; without it, the
forms post to the gateway and redirect back. Every dynamic value here goes through
``html.escape``: the markup carries no inline script or style, so it works under a strict CSP.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import html
import json
import re
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .assets import static_dir
from .children import NOTICE, ChildGuard, refused_for_child
from .consent import Consent, ConsentStatus
from .csp import csp_needs
from .registry import CategoryRegistry
from .settings import PolicyVersion, Settings

if TYPE_CHECKING:
    from .asgi import Scope
    from .request import RequestFacts

# Tag names are spelled as case classes rather than with re.IGNORECASE: a pattern that starts with
# a literal ("<", "</") lets the engine skip ahead to it, which IGNORECASE prevents (ASCII only
# either way: these are bytes patterns).
_LANG_ATTR = re.compile(rb"<[hH][tT][mM][lL][^>]*\b[lL][aA][nN][gG]=[\"']?([A-Za-z]{2})")
_HEAD_START = re.compile(rb"<[hH][eE][aA][dD](\s[^>]*)?>")
_HEAD_END = re.compile(rb"</[hH][eE][aA][dD]\s*>")
_BODY_END = re.compile(rb"</[bB][oO][dD][yY]\s*>")
LOCALES = ("ko", "en")
_PAGE_LOCALES = {code.encode("ascii"): code for code in LOCALES}  # a page's lang="..", lower-cased
# Distinct banner roots kept rendered: one per consent state, locale and page (with its query).
ROOT_CACHE_SIZE = 1024
# The settings layer's links to the cookie declaration and to the visitor's own data (docs/cookies.md).
SETTINGS_LINKS = {
    "ko": ("사용하는 쿠키 목록", "내 정보 조회"),
    "en": ("Cookies this site uses", "Your data"),
}
# Distinct asset tag pairs kept encoded: one per consent state and page policy without a nonce.
ASSET_CACHE_SIZE = 64
# Longer Content-Security-Policy headers are read for every page rather than kept as a cache key.
ASSET_CSP_MAX_BYTES = 2048


class _Announced(enum.Enum):
    """The upcoming-policy notice as the settings announce it on today's (UTC) date."""

    TODAY = "today"


def choose_locale(accept_language: str, default: str) -> str:
    """'ko' or 'en' from an Accept-Language header, by the first supported language listed."""
    for part in accept_language.split(","):
        lang = part.split(";", 1)[0].strip().lower()[:2]
        if lang in LOCALES:
            return lang
    return default


def safe_return_path(value: object) -> str | None:
    """A same-site path to redirect to, or None: never another host (no open redirect). Anything but
    a string (a JSON body may send ``true``) is no path."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ch in value for ch in "\r\n\t\\") or any(ord(ch) < 32 for ch in value):
        return None
    return value


def tracker_config(settings: Settings) -> dict[str, Any]:
    """What ``static/tracker.js`` needs to skip events the server would drop anyway.

    ``e`` maps exact event names to categories, ``p`` lists glob patterns as regular expressions,
    ``u`` is the category of unknown names and ``d`` the categories whose events are dropped
    unless granted (their policy-matrix row says ``drop`` when the category is not granted).
    """
    exact: dict[str, str] = {}
    patterns: list[list[str]] = []
    for name, category in settings.event_registry:
        if any(ch in name for ch in "*?["):
            # fnmatch's regex syntax ((?s:...)\Z) is Python-only; JavaScript gets a plain anchored one.
            patterns.append([_glob_to_js(name), category])
        else:
            exact[name] = category
    rows = {kind: refused for kind, _granted, refused in settings.policy_matrix}
    # Categories without a row of their own follow the visit category's row, as in Policy.
    fallback = rows.get(settings.visit_category, "pseudonymise")
    dropped = [c.key for c in settings.categories if not c.required and rows.get(c.key, fallback) == "drop"]
    return {"e": exact, "p": patterns, "u": settings.unknown_event_category, "d": dropped}


def _glob_to_js(pattern: str) -> str:
    """A glob (``*``, ``?``) as an anchored regular expression both Python and JavaScript read alike."""
    return "^" + "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern) + "$"


class BannerRenderer:
    """Renders the banner forms and injects them (plus the banner's CSS and JS) into HTML bodies."""

    def __init__(self, settings: Settings, cookies: CategoryRegistry) -> None:
        self.settings = settings
        self._cookies = cookies
        prefix = html.escape(settings.prefix)
        self._css_href = f"{prefix}/static/banner.css"
        self._css = f'<link rel="stylesheet" href="{self._css_href}">'
        self._script_src = f"{prefix}/static/banner.js"
        self._script_hashes = _file_hashes("banner.js")
        self._style_hashes = _file_hashes("banner.css")
        self._track = html.escape(json.dumps(tracker_config(settings), separators=(",", ":")))
        # The upcoming-policy notice shows until the UTC midnight its version takes effect.
        up = settings.upcoming_policy
        self._announced_until = (
            dt.datetime.combine(up.effective, dt.time(), dt.UTC).timestamp() if up is not None else 0.0
        )
        # The root differs only by these inputs, and returning visitors see the same few roots on
        # every page: rendering it once per distinct input keeps escaping and quoting off most pages.
        self._root = lru_cache(maxsize=ROOT_CACHE_SIZE)(self._render_root)
        # What root_html reads from the settings on every page, looked up once.
        self._upcoming = settings.upcoming_policy
        self._behavioural = settings.consent.behavioural
        self._default_locale = settings.default_locale
        self._assets = lru_cache(maxsize=ASSET_CACHE_SIZE)(self._encoded_assets)

    def __repr__(self) -> str:
        return f"BannerRenderer(prefix={self.settings.prefix!r})"

    def root_html(self, consent: Consent, facts: RequestFacts, scope: Scope, page_start: bytes = b"") -> bytes:
        """The banner's root (UTF-8) for this visitor and page; ``page_start`` (the page's first bytes) may
        name the page's language in ``<html lang>``, which then wins over Accept-Language."""
        match = _LANG_ATTR.search(page_start, 0, 2048)
        locale = _PAGE_LOCALES.get(match.group(1).lower()) if match else None
        if locale is None:
            locale = choose_locale(facts.accept_language, self._default_locale)
        path = scope.get("path", "/")
        query = scope.get("query_string", b"")
        upcoming = self._upcoming if time.time() < self._announced_until else None
        # A child's behavioural categories are shown as unavailable, with the reason.
        child = refused_for_child(ChildGuard.mark_of(scope), self._behavioural)
        if query:
            # Query strings can carry personal data (?email=...): such a page's root is rendered for
            # it alone and not remembered.
            here = f"{path}?{query.decode('latin-1')}"
            return self._render_root(consent.status, consent.categories, consent.gpc, locale, here, upcoming, child)
        return self._root(consent.status, consent.categories, consent.gpc, locale, path, upcoming, child)

    def asset_tags(self, consent: Consent, csp: list[bytes] | bytes = b"") -> tuple[str, str]:
        """The Google Consent Mode script for the top of ``<head>`` (empty when that mode is off),
        and the stylesheet and script tags for its end.

        Each tag carries what the page's Content-Security-Policy needs: the policy's nonce for
        scripts on the script, its nonce for styles on the stylesheet, and an ``integrity`` hash
        where the policy allows sources by hash (CSP Level 3 matches external files that way).
        """
        needs = csp_needs(csp if isinstance(csp, list) else [csp] if csp else [])
        script_attrs = needs.script_attrs(self._script_hashes)
        style_attrs = needs.style_attrs(self._style_hashes)
        css = f'<link rel="stylesheet" href="{self._css_href}"{style_attrs}>'
        if self.settings.google_consent_mode:
            granted = html.escape(" ".join(sorted(consent.categories)))
            head_script = (
                f'<script src="{self._script_src}"{script_attrs} data-cg-gcm data-cg-status="{consent.status.value}" '
                f'data-cg-granted="{granted}"></script>'
            )
            return head_script, css
        return "", f'{css}<script src="{self._script_src}" defer{script_attrs}></script>'

    def asset_markup(self, consent: Consent, csp: list[bytes]) -> tuple[bytes, bytes]:
        """``asset_tags`` as ASCII with character references, right in any ASCII-compatible charset.

        Without a nonce the pair depends only on the consent state and the page's policy, which
        repeat page after page: it is kept, per distinct pair (bounded). A nonce is new on every
        response, so such a policy's tags are made for the page alone.
        """
        if not csp:  # most pages: no policy of their own
            return self._assets(consent.status, consent.categories, ())
        key = tuple(csp)
        if sum(map(len, key)) > ASSET_CSP_MAX_BYTES or any(b"nonce-" in value for value in key):
            return self._encoded_assets(consent.status, consent.categories, key)
        return self._assets(consent.status, consent.categories, key)

    def _encoded_assets(
        self, status: ConsentStatus, categories: frozenset[str], csp: tuple[bytes, ...]
    ) -> tuple[bytes, bytes]:
        # Everything asset_tags reads from the consent is in the arguments (they are the cache key).
        head_script, assets = self.asset_tags(Consent(status, categories), list(csp))
        return head_script.encode("ascii", "xmlcharrefreplace"), assets.encode("ascii", "xmlcharrefreplace")

    def inject(self, body: bytes, consent: Consent, facts: RequestFacts, scope: Scope, csp: bytes = b"") -> bytes:
        """The page with the banner assets in ``<head>`` and the banner before ``</body>``.

        With Google Consent Mode on, banner.js loads synchronously at the top of ``<head>`` so its
        ``consent default`` reaches the data layer before any tag; otherwise it is deferred.
        """
        snippet = self.root_html(consent, facts, scope, body[:2048])
        head_script, css = self.asset_tags(consent, csp)
        script = head_script.encode()
        if script:
            head_start = _HEAD_START.search(body, 0, 4096)
            if head_start:
                body = body[: head_start.end()] + script + body[head_start.end() :]
                script = b""
        assets = css.encode() + script
        at = _head_end(body)
        end = _last_body_end(body)
        # One copy of the page: the positions were found in ``body``, and neither insertion can
        # create or hide a </body> (what is inserted is escaped markup that starts with "<").
        view = memoryview(body)
        if at < 0:
            snippet = assets + snippet
            if end < 0:
                return body + snippet
            return b"".join((view[:end], snippet, view[end:]))
        if end < 0:
            return b"".join((view[:at], assets, view[at:], snippet))
        if end >= at:
            return b"".join((view[:at], assets, view[at:end], snippet, view[end:]))
        return b"".join((view[:end], snippet, view[end:at], assets, view[at:]))

    def _render_root(
        self,
        status: ConsentStatus,
        categories: frozenset[str],
        gpc: bool,
        locale: str,
        here: str,
        upcoming: PolicyVersion | None,
        child: frozenset[str] = frozenset(),
    ) -> bytes:
        # Everything the root reads from the consent is in the arguments (they are the cache key).
        consent = Consent(status, categories, gpc=gpc)
        return self.render(consent, locale, here, upcoming=upcoming, child=child).encode("utf-8")

    def root_cache_info(self) -> object:
        """Hits, misses and size of the rendered banner roots."""
        return self._root.cache_info()

    def render(
        self,
        consent: Consent,
        locale: str,
        return_to: str,
        *,
        open_settings: bool = False,
        upcoming: PolicyVersion | _Announced | None = _Announced.TODAY,
        child: frozenset[str] = frozenset(),
    ) -> str:
        """The banner root: the persistent settings link always, the first layer while a choice is needed.

        ``upcoming`` is the policy change to announce; by default the one announced today. ``child``:
        the categories refused to a visitor the app marked as under 14 (``children.refused_for_child``).
        """
        s = self.settings
        esc = html.escape
        prefix = esc(s.prefix)
        needs_choice = consent.status is not ConsentStatus.GIVEN
        granted = " ".join(sorted(consent.categories))
        ret = safe_return_path(return_to) or "/"
        place = s.settings_button
        parts = [
            f'<div id="cg-root" class="cg-root cg-at-{place}" data-cg-prefix="{prefix}" '
            f'data-cg-status="{consent.status.value}" data-cg-granted="{esc(granted)}" data-cg-locale="{locale}" '
            f'data-cg-gpc="{"1" if consent.gpc else "0"}" data-cg-track="{self._track}" '
            f'data-cg-saved="{esc(s.banner.get("saved", locale))}" lang="{locale}">'
        ]
        if place != "none":
            # With "none" the site shows its own control: any element with data-cg-open-settings
            # (banner.js), or a link to {prefix}/?return_to=... that works without JavaScript.
            parts.append(
                f'<a class="cg-settings-link" href="{self._settings_url(locale, ret)}" data-cg-open>'
                f"{esc(s.banner.get('settings_link', locale))}</a>"
            )
        if needs_choice or open_settings:
            parts.append(self.form(consent, locale, ret, open_settings=open_settings, upcoming=upcoming, child=child))
        parts.append("</div>")
        return "".join(parts)

    def _settings_url(self, locale: str, return_to: str) -> str:
        # What urlencode(..., quote_via=quote) builds, without its generic machinery (once per page).
        query = f"return_to={quote(safe_return_path(return_to) or '/', safe='')}&locale={quote(locale, safe='')}"
        return html.escape(f"{self.settings.prefix}/?{query}")

    def _head(self, title_id: str, title: str, locale: str, return_to: str, heading: str = "h2") -> str:
        t = self.settings.banner
        esc = html.escape
        other = "en" if locale == "ko" else "ko"
        return (
            f'<div class="cg-head"><{heading} id="{title_id}" class="cg-title">{esc(title)}</{heading}>'
            f'<a class="cg-lang" href="{self._settings_url(other, return_to)}" lang="{other}" hreflang="{other}" '
            f'data-cg-lang="{other}">{esc(t.get("other_language", locale))}</a></div>'
        )

    def _notices(
        self,
        consent: Consent,
        locale: str,
        upcoming: PolicyVersion | _Announced | None,
        child: frozenset[str] = frozenset(),
    ) -> str:
        t = self.settings.banner
        esc = html.escape
        out = []
        if child:
            out.append(f'<p class="cg-notice cg-child">{esc(NOTICE["ko" if locale == "ko" else "en"])}</p>')
        if consent.gpc:
            out.append(f'<p class="cg-notice cg-gpc">{esc(t.get("gpc_notice", locale))}</p>')
        if isinstance(upcoming, _Announced):
            upcoming = self.settings.announced_policy()
        if upcoming is not None:
            text = t.get("upcoming_notice", locale).format(version=str(upcoming), date=upcoming.effective.isoformat())
            out.append(f'<p class="cg-notice cg-upcoming">{esc(text)}</p>')
        return "".join(out)

    def _intro(self, locale: str, text_id: str) -> str:
        s = self.settings
        esc = html.escape
        # No policy URL configured: no link, rather than one to a page the site may not have.
        link = f' <a href="{esc(s.policy_url)}">{esc(s.banner.get("policy_link", locale))}</a>' if s.policy_url else ""
        return f'<p id="{text_id}" class="cg-text">{esc(s.banner.text(locale))}{link}</p>'

    def form(
        self,
        consent: Consent,
        locale: str,
        return_to: str,
        *,
        open_settings: bool = False,
        upcoming: PolicyVersion | _Announced | None = _Announced.TODAY,
        child: frozenset[str] = frozenset(),
    ) -> str:
        """The first layer (a non-modal dialog), or with ``open_settings`` the second layer's form."""
        if open_settings:
            return self.settings_form(consent, locale, return_to, upcoming=upcoming, child=child)
        s = self.settings
        t = s.banner
        esc = html.escape
        prefix = esc(s.prefix)
        ret = esc(safe_return_path(return_to) or "/")
        # Three submit buttons of one kind and one style: "settings" submits with GET to the
        # settings page (no JavaScript) or opens the second layer (banner.js).
        return (
            f'<section id="cg-banner" class="cg-banner" role="dialog" aria-modal="false" '
            f'aria-labelledby="cg-title" aria-describedby="cg-text" lang="{locale}" tabindex="-1">'
            f'<form method="post" action="{prefix}/" class="cg-form">'
            f'<input type="hidden" name="return_to" value="{ret}">'
            f'<input type="hidden" name="locale" value="{locale}">'
            + '<div class="cg-body">'
            + self._head("cg-title", t.title(locale), locale, return_to)
            + self._intro(locale, "cg-text")
            + self._notices(consent, locale, upcoming, child)
            + "</div>"
            + '<div class="cg-actions">'
            + _choice("accept_all", t.get("accept", locale))
            + _choice("reject_all", t.get("reject", locale))
            + f'<button type="submit" class="cg-button" formmethod="get" formaction="{prefix}/" data-cg-settings>'
            f"{esc(t.get('settings', locale))}</button>" + "</div></form></section>"
        )

    def settings_form(
        self,
        consent: Consent,
        locale: str,
        return_to: str,
        *,
        heading: str = "h2",
        upcoming: PolicyVersion | _Announced | None = _Announced.TODAY,
        child: frozenset[str] = frozenset(),
    ) -> str:
        """The second layer as a plain form: one toggle per category, then the three choices; ``child``
        lists the categories shown as unavailable to a visitor marked as under 14."""
        s = self.settings
        t = s.banner
        esc = html.escape
        prefix = esc(s.prefix)
        ret = esc(safe_return_path(return_to) or "/")
        toggles = []
        for cat in s.categories:
            key = esc(cat.key)
            checked = cat.required or (consent.status is ConsentStatus.GIVEN and consent.allows(cat.key))
            gpc_blocked = consent.gpc and cat.key in s.gpc_refuses
            if cat.required:
                attrs = " checked disabled"
            elif gpc_blocked or cat.key in child:
                attrs = " disabled"
            else:
                attrs = " checked" if checked else ""
            hint = f' <span class="cg-always">({esc(t.get("always_on", locale))})</span>' if cat.required else ""
            names = self._cookies.names_for(cat.key)
            cookie_list = (
                f'<p class="cg-cookies">{esc(t.get("cookies", locale))}: {esc(", ".join(names))}</p>' if names else ""
            )
            toggles.append(
                f'<div class="cg-category"><input type="checkbox" class="cg-switch" id="cg-cat-{key}" '
                f'name="categories" value="{key}" aria-describedby="cg-desc-{key}"{attrs}>'
                f'<label for="cg-cat-{key}" class="cg-category-name">{esc(cat.name(locale))}{hint}</label>'
                f'<div id="cg-desc-{key}" class="cg-desc"><p class="cg-description">{esc(cat.description(locale))}</p>'
                f"{cookie_list}</div></div>"
            )
        return (
            f'<section id="cg-prefs" class="cg-prefs" aria-labelledby="cg-prefs-title" lang="{locale}">'
            f'<form method="post" action="{prefix}/" class="cg-form">'
            f'<input type="hidden" name="return_to" value="{ret}">'
            f'<input type="hidden" name="locale" value="{locale}">'
            + '<div class="cg-body">'
            + self._head("cg-prefs-title", t.get("settings_link", locale), locale, return_to, heading)
            + self._intro(locale, "cg-prefs-text")
            + self._notices(consent, locale, upcoming, child)
            + f'<div class="cg-categories">{"".join(toggles)}</div>'
            + self._links(locale)
            + "</div>"
            + '<div class="cg-actions">'
            + _choice("accept_all", t.get("accept", locale))
            + _choice("reject_all", t.get("reject", locale))
            + _choice("save", t.get("save", locale))
            + "</div></form></section>"
        )

    def _links(self, locale: str) -> str:
        declaration, my_data = SETTINGS_LINKS["ko" if locale == "ko" else "en"]
        prefix = html.escape(self.settings.prefix)
        return (
            f'<p class="cg-links"><a href="{prefix}/cookies?lang={locale}">{html.escape(declaration)}</a> · '
            f'<a href="{prefix}/my-data">{html.escape(my_data)}</a></p>'
        )

    def page(self, consent: Consent, locale: str, return_to: str, child: frozenset[str] = frozenset()) -> str:
        """A standalone settings page (the 'cookie settings' link without JavaScript)."""
        s = self.settings
        t = s.banner
        esc = html.escape
        prefix = esc(s.prefix)
        ret = esc(safe_return_path(return_to) or "/")
        withdraw = ""
        if consent.consent_id:
            withdraw = (
                f'<form method="post" action="{prefix}/withdraw" class="cg-withdraw">'
                f'<input type="hidden" name="return_to" value="{ret}">'
                f'<input type="hidden" name="locale" value="{locale}">'
                f'<button type="submit" class="cg-button cg-secondary">{esc(t.get("withdraw", locale))}</button></form>'
                f'<p><a href="{prefix}/receipts">{esc(t.get("receipts", locale))}</a></p>'
            )
        form = self.settings_form(consent, locale, return_to, heading="h1", child=child)
        return (
            f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f"<title>{esc(t.get('settings_link', locale))}</title>"
            f"{self._css}</head>"
            f'<body class="cg-page"><main>{form}{withdraw}'
            f'<p><a href="{ret}" class="cg-back">← {esc(t.get("close", locale))}</a></p></main></body></html>'
        )


def _head_end(body: bytes) -> int:
    """Where the first ``</head>`` (any case and spacing) starts, or -1."""
    at = body.find(b"</head>")
    # The plain spelling is the first one unless a "</h" or "</H" stands before it.
    if at >= 0 and body.find(b"</h", 0, at) < 0 and body.find(b"</H", 0, at) < 0:
        return at
    match = _HEAD_END.search(body)
    return match.start() if match else -1


def _last_body_end(body: bytes) -> int:
    """Where the last ``</body>`` (any case and spacing) starts, or -1."""
    # A match starts with "<" and holds no other, so matches never overlap: the last one is the
    # plain "</body>" rfind sees unless a variant spelling follows it.
    end = body.rfind(b"</body>")
    if end >= 0 and _BODY_END.search(body, end + 1) is None:
        return end
    found = -1
    for match in _BODY_END.finditer(body):
        found = match.start()
    return found


def _file_hashes(name: str) -> dict[str, str]:
    """Base64 SHA-2 digests of a static file, for ``integrity`` under a hash-based policy."""
    try:
        data = (static_dir() / name).read_bytes()
    except OSError:
        return {}
    return {
        algorithm: base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")
        for algorithm in ("sha256", "sha384", "sha512")
    }


def _choice(action: str, text: str) -> str:
    """One of the equal-weight choice buttons."""
    return f'<button type="submit" class="cg-button" name="action" value="{action}">{html.escape(text)}</button>'
