"""The server-rendered banner: a plain form that works with scripts off, injected into HTML pages.

With JavaScript on, ``static/banner.js`` takes the same markup over (fetch instead of a page
load, script gating without a reload); without it, the form posts to the gateway and redirects back.
"""

from __future__ import annotations

import html
import re
from typing import Any

from .consent import Consent, ConsentStatus
from .registry import CategoryRegistry
from .settings import Settings

_LANG_ATTR = re.compile(rb"<html[^>]*\blang=[\"']?([A-Za-z]{2})", re.IGNORECASE)
_NONCE = re.compile(rb"'nonce-([A-Za-z0-9+/=_\-]{8,128})'")
_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def choose_locale(accept_language: str, default: str) -> str:
    """'ko' or 'en' from an Accept-Language header, by the first supported language listed."""
    for part in accept_language.split(","):
        lang = part.split(";", 1)[0].strip().lower()[:2]
        if lang in ("ko", "en"):
            return lang
    return default


def safe_return_path(value: str | None) -> str | None:
    """A same-site path to redirect to, or None: never another host (no open redirect)."""
    if not value or len(value) > 2048:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ch in value for ch in "\r\n\t\\") or any(ord(ch) < 32 for ch in value):
        return None
    return value


class BannerRenderer:
    """Renders the banner form and injects it (plus the banner's CSS and JS) into HTML bodies."""

    def __init__(self, settings: Settings, cookies: CategoryRegistry) -> None:
        self.settings = settings
        self._cookies = cookies
        prefix = settings.prefix
        self._assets = (
            f'<link rel="stylesheet" href="{prefix}/static/banner.css">'
            f'<script src="{prefix}/static/banner.js" defer{{nonce}}></script>'
        )

    def __repr__(self) -> str:
        return f"BannerRenderer(prefix={self.settings.prefix!r})"

    def inject(self, body: bytes, consent: Consent, facts: Any, scope: Any, csp: bytes = b"") -> bytes:
        """The page with the banner assets before ``</head>`` and the banner before ``</body>``."""
        match = _LANG_ATTR.search(body, 0, 2048)
        if match:
            lang = match.group(1).decode("ascii").lower()
            locale = lang if lang in ("ko", "en") else choose_locale(facts.accept_language, self.settings.default_locale)
        else:
            locale = choose_locale(facts.accept_language, self.settings.default_locale)
        nonce = ""
        if csp:
            found = _NONCE.search(csp)
            if found:
                nonce = f' nonce="{html.escape(found.group(1).decode("ascii"))}"'
        path = scope.get("path", "/")
        query = scope.get("query_string", b"").decode("latin-1")
        here = path + (f"?{query}" if query else "")
        assets = self._assets.replace("{nonce}", nonce).encode("utf-8")
        snippet = self.render(consent, locale, here).encode("utf-8")
        head = _HEAD_END.search(body)
        if head:
            body = body[: head.start()] + assets + body[head.start():]
        else:
            snippet = assets + snippet
        end = None
        for end in _BODY_END.finditer(body):
            pass
        if end is None:
            return body + snippet
        return body[: end.start()] + snippet + body[end.start():]

    def render(self, consent: Consent, locale: str, return_to: str, *, open_settings: bool = False) -> str:
        """The banner root: a settings link always, the consent form while a choice is needed."""
        s = self.settings
        t = s.banner
        esc = html.escape
        prefix = esc(s.prefix)
        needs_choice = consent.status is not ConsentStatus.GIVEN
        granted = " ".join(sorted(consent.categories))
        ret = esc(safe_return_path(return_to) or "/")
        parts = [
            f'<div id="cg-root" class="cg-root" data-cg-prefix="{prefix}" data-cg-status="{consent.status.value}" '
            f'data-cg-granted="{esc(granted)}" data-cg-locale="{locale}" data-cg-gpc="{"1" if consent.gpc else "0"}">',
            f'<a class="cg-settings-link" href="{prefix}/?return_to={esc(_quote(return_to))}" '
            f'data-cg-open>{esc(t.get("settings_link", locale))}</a>',
        ]
        if needs_choice or open_settings:
            parts.append(self.form(consent, locale, ret, open_settings=open_settings))
        parts.append("</div>")
        return "".join(parts)

    def form(self, consent: Consent, locale: str, return_to: str, *, open_settings: bool = False) -> str:
        s = self.settings
        t = s.banner
        esc = html.escape
        prefix = esc(s.prefix)
        notices = []
        if consent.gpc:
            notices.append(f'<p class="cg-notice cg-gpc">{esc(t.get("gpc_notice", locale))}</p>')
        upcoming = s.announced_policy()
        if upcoming is not None:
            text = t.get("upcoming_notice", locale).format(
                version=str(upcoming), date=upcoming.effective.isoformat()
            )
            notices.append(f'<p class="cg-notice cg-upcoming">{esc(text)}</p>')
        toggles = []
        for cat in s.categories:
            checked = consent.allows(cat.key) and (consent.status is ConsentStatus.GIVEN or cat.required)
            locked = cat.required
            gpc_blocked = consent.gpc and cat.key in s.gpc_refuses
            names = self._cookies.names_for(cat.key)
            cookie_list = (
                f'<p class="cg-cookies">{esc(t.get("cookies", locale))}: {esc(", ".join(names))}</p>' if names else ""
            )
            attrs = ' checked' if checked else ''
            if locked:
                attrs = ' checked disabled'
            elif gpc_blocked:
                attrs = ' disabled'
            hint = f' <span class="cg-always">({esc(t.get("always_on", locale))})</span>' if locked else ""
            toggles.append(
                f'<div class="cg-category"><label><input type="checkbox" name="categories" value="{esc(cat.key)}"'
                f'{attrs}> <span class="cg-category-name">{esc(cat.name(locale))}</span>{hint}</label>'
                f'<p class="cg-description">{esc(cat.description(locale))}</p>{cookie_list}</div>'
            )
        open_attr = " open" if open_settings else ""
        return (
            f'<section id="cg-banner" class="cg-banner" role="dialog" aria-modal="false" '
            f'aria-labelledby="cg-title" aria-describedby="cg-text" lang="{locale}">'
            f'<form method="post" action="{prefix}/" class="cg-form">'
            f'<input type="hidden" name="return_to" value="{return_to}">'
            f'<input type="hidden" name="locale" value="{locale}">'
            f'<h2 id="cg-title" class="cg-title">{esc(t.title(locale))}</h2>'
            f'<p id="cg-text" class="cg-text">{esc(t.text(locale))} '
            f'<a href="{esc(s.policy_url)}">{esc(t.get("policy_link", locale))}</a></p>'
            + "".join(notices)
            + '<div class="cg-actions">'
            f'<button type="submit" class="cg-button" name="action" value="accept_all">{esc(t.get("accept", locale))}</button>'
            f'<button type="submit" class="cg-button" name="action" value="reject_all">{esc(t.get("reject", locale))}</button>'
            f'<details class="cg-details"{open_attr}><summary class="cg-button">{esc(t.get("settings", locale))}</summary>'
            f'<div class="cg-categories">{"".join(toggles)}'
            f'<button type="submit" class="cg-button cg-save" name="action" value="save">{esc(t.get("save", locale))}</button>'
            "</div></details></div></form></section>"
        )

    def page(self, consent: Consent, locale: str, return_to: str) -> str:
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
                f'<button type="submit" class="cg-button">{esc(t.get("withdraw", locale))}</button></form>'
                f'<p><a href="{prefix}/receipts">{esc(t.get("receipts", locale))}</a></p>'
            )
        return (
            f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(t.get("settings_link", locale))}</title>'
            f'<link rel="stylesheet" href="{prefix}/static/banner.css"></head>'
            f'<body class="cg-page"><main>{self.form(consent, locale, ret, open_settings=True)}{withdraw}'
            f'<p><a href="{ret}">←</a></p></main></body></html>'
        )


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(safe_return_path(path) or "/", safe="/")
