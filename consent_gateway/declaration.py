"""The public cookie declaration (``GET {prefix}/cookies``) and the privacy policy's cookie section.

Both are built from one ``Declaration``: the site's registry (with the descriptions its settings give),
the well-known-cookie catalogue, and the live inventory of what the site really sets. Names that only
ever came back in requests and that neither the registry nor the catalogue knows are left out of the
public page: anyone can send any cookie name, and a public page must not repeat what strangers wrote.
The operator sees those names in ``consent-gateway cookies --unclassified``.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .banner import choose_locale
from .inventory import (
    SESSION,
    SOURCE_CATALOGUE,
    SOURCE_GATEWAY,
    SOURCE_REGISTRY,
    SOURCE_UNCLASSIFIED,
    Classifier,
    CookieSummary,
    InventoryReport,
)
from .settings import Category, CookieDescription, Settings

FIRST_PARTY = "first"
THIRD_PARTY = "third"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeclaredCookie:
    """One line of the declaration."""

    name: str
    category: str
    provider: str
    purpose_ko: str
    purpose_en: str
    lifetime_ko: str
    lifetime_en: str
    party: str
    source: str
    set_by: str

    def purpose(self, locale: str) -> str:
        return self.purpose_ko if locale == "ko" else self.purpose_en

    def lifetime(self, locale: str) -> str:
        return self.lifetime_ko if locale == "ko" else self.lifetime_en

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "category": self.category,
            "provider": self.provider,
            "purpose_ko": self.purpose_ko,
            "purpose_en": self.purpose_en,
            "lifetime_ko": self.lifetime_ko,
            "lifetime_en": self.lifetime_en,
            "party": self.party,
            "source": self.source,
            "set_by": self.set_by,
        }


@dataclass(frozen=True, slots=True)
class Declaration:
    """The declared cookies per category, in the settings' category order."""

    categories: tuple[tuple[Category, tuple[DeclaredCookie, ...]], ...]

    def cookies(self) -> list[DeclaredCookie]:
        return [c for _, cookies in self.categories for c in cookies]

    def as_json(self) -> dict[str, Any]:
        return {
            "categories": [
                {
                    "key": cat.key,
                    "name_ko": cat.name_ko,
                    "name_en": cat.name_en,
                    "required": cat.required,
                    "cookies": [c.as_json() for c in cookies],
                }
                for cat, cookies in self.categories
            ]
        }


def lifetime_text(seconds: int) -> tuple[str, str]:
    """A cookie lifetime in Korean and English words: session, minutes, hours, days, months or years."""
    if seconds == SESSION:
        return "브라우저 종료 시까지", "Until the browser closes"
    # A unit is used from a little below its size, so 364 days (Django's CSRF cookie) reads "1 year".
    for size, ko, en, least in (
        (31_536_000, "년", "year", 350 * 86_400),
        (2_592_000, "개월", "month", 28 * 86_400),
        (86_400, "일", "day", 86_400),
    ):
        if seconds >= least:
            n = round(seconds / size)
            return f"{n}{ko}", f"{n} {en}{'s' if n != 1 else ''}"
    if seconds >= 3600:
        n = round(seconds / 3600)
        return f"{n}시간", f"{n} hour{'s' if n != 1 else ''}"
    n = max(1, round(seconds / 60)) if seconds else 0
    return f"{n}분", f"{n} minute{'s' if n != 1 else ''}"


def build_declaration(
    settings: Settings,
    classifier: Classifier,
    report: InventoryReport | None = None,
    descriptions: Mapping[str, CookieDescription] | None = None,
) -> Declaration:
    """The declaration of what the site uses: the registry, its descriptions, the catalogue, the inventory.

    ``descriptions`` default to the settings' ``[cookie_descriptions]``.
    """
    if descriptions is None:
        descriptions = dict(settings.cookie.descriptions)
    seen = {c.name: c for c in (report.cookies if report else ())}
    names: dict[str, None] = {}
    names[settings.consent_cookie_name] = None
    for pattern, _ in settings.cookie.registry:
        names[pattern] = None
    for name in descriptions:
        names[name] = None
    for name, summary in seen.items():
        # Script-only names nobody knows are left out of the public page (see the module's docstring).
        # Classified again with today's registry and catalogue: either may know more than when it was seen.
        if classifier.classify(name)[1] != SOURCE_UNCLASSIFIED or summary.set_count:
            names[name] = None
    declared: dict[str, list[DeclaredCookie]] = {}
    for name in names:
        cookie = _declare(settings, classifier, name, seen.get(name), descriptions.get(name))
        declared.setdefault(cookie.category, []).append(cookie)
    groups = []
    known = {c.key for c in settings.consent.categories}
    for category in settings.consent.categories:
        cookies = sorted(declared.get(category.key, []), key=lambda c: c.name.lower())
        groups.append((category, tuple(cookies)))
    for key in sorted(set(declared) - known):  # a catalogue category the settings do not have
        groups.append((Category(key=key, name_ko=key, name_en=key), tuple(declared[key])))
    return Declaration(tuple(groups))


def _declare(
    settings: Settings,
    classifier: Classifier,
    name: str,
    summary: CookieSummary | None,
    description: CookieDescription | None,
) -> DeclaredCookie:
    if name == settings.consent_cookie_name:
        category, source = "necessary", SOURCE_GATEWAY
        gateway_days = settings.cookie.max_age_days
        description = description or CookieDescription(
            purpose_ko="쿠키 동의 여부와 선택 내용을 기억합니다.",
            purpose_en="Remembers whether and to what you consented.",
            lifetime_ko=f"{gateway_days}일",
            lifetime_en=f"{gateway_days} days",
            party=FIRST_PARTY,
        )
    else:
        category, source = classifier.classify(name)
    entry = classifier.catalogue_entry(name)
    d = description or CookieDescription()
    if summary is not None and summary.set_count:
        seen_ko, seen_en = lifetime_text(summary.lifetime_seconds)
    else:
        seen_ko, seen_en = _catalogue_lifetime(entry.lifetime if entry else "")
    provider = d.provider or (entry.provider if entry else "")
    set_by = summary.set_by if summary else ""
    # A cookie a third party's script keeps on this site's domain serves that third party.
    party = d.party or (THIRD_PARTY if set_by == "script" and provider and source == SOURCE_CATALOGUE else FIRST_PARTY)
    return DeclaredCookie(
        name=name,
        category=category,
        provider=provider,
        # Without a purpose of its own a cookie serves its category's purpose.
        purpose_ko=d.purpose_ko or (entry.purpose_ko if entry else "") or _category_text(settings, category, "ko"),
        purpose_en=d.purpose_en or (entry.purpose_en if entry else "") or _category_text(settings, category, "en"),
        lifetime_ko=d.lifetime_ko or seen_ko,
        lifetime_en=d.lifetime_en or seen_en,
        party=party,
        source=source
        if source != SOURCE_UNCLASSIFIED
        else SOURCE_REGISTRY
        if name in _registered(settings)
        else source,
        set_by=set_by,
    )


def _category_text(settings: Settings, key: str, locale: str) -> str:
    for category in settings.consent.categories:
        if category.key == key:
            return category.description(locale)
    return ""


def _catalogue_lifetime(lifetime: str | int) -> tuple[str, str]:
    if isinstance(lifetime, int):
        return lifetime_text(lifetime)
    return lifetime, lifetime


def _registered(settings: Settings) -> set[str]:
    return {p for p, _ in settings.cookie.registry}


# -- the page ----------------------------------------------------------------------------------------

_TEXTS = {
    "ko": {
        "title": "쿠키 목록",
        "intro": "이 사이트가 사용하는 쿠키를 종류별로 안내합니다. 필수 쿠키 외에는 동의하신 경우에만 사용합니다.",
        "name": "이름",
        "provider": "제공자",
        "purpose": "목적",
        "lifetime": "보존 기간",
        "party": "구분",
        "first": "자사",
        "third": "제3자",
        "none": "이 종류의 쿠키는 사용하지 않습니다.",
        "this_site": "이 사이트",
        "settings": "쿠키 설정 바꾸기",
        "other": "English",
    },
    "en": {
        "title": "Cookie declaration",
        "intro": "The cookies this site uses, by category. Apart from strictly necessary ones, "
        "they are used only with your consent.",
        "name": "Name",
        "provider": "Provider",
        "purpose": "Purpose",
        "lifetime": "Lifetime",
        "party": "Party",
        "first": "First party",
        "third": "Third party",
        "none": "No cookies of this kind are used.",
        "this_site": "This site",
        "settings": "Change cookie settings",
        "other": "한국어",
    },
}


def render_html(declaration: Declaration, locale: str, prefix: str) -> str:
    """The declaration as a small standalone HTML page in ``locale``; every value is escaped."""
    t = _TEXTS["ko" if locale == "ko" else "en"]
    esc = html.escape
    other = "en" if locale == "ko" else "ko"
    parts = [
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(t['title'])}</title>"
        f'<link rel="stylesheet" href="{esc(prefix)}/static/banner.css"></head>'
        f'<body class="cg-page cg-declaration"><main class="cg-wide"><h1>{esc(t["title"])}</h1><p>{esc(t["intro"])}</p>'
        f'<p><a href="{esc(prefix)}/cookies?lang={other}" hreflang="{other}" lang="{other}">{esc(t["other"])}</a>'
        f' · <a href="{esc(prefix)}/?locale={locale}">{esc(t["settings"])}</a></p>'
    ]
    for category, cookies in declaration.categories:
        parts.append(f'<section id="cat-{esc(category.key)}"><h2>{esc(category.name(locale))}</h2>')
        if category.description(locale):
            parts.append(f"<p>{esc(category.description(locale))}</p>")
        if not cookies:
            parts.append(f"<p>{esc(t['none'])}</p></section>")
            continue
        parts.append(
            '<div class="cg-scroll"><table><thead><tr>'
            + "".join(f'<th scope="col">{esc(t[k])}</th>' for k in ("name", "provider", "purpose", "lifetime", "party"))
            + "</tr></thead><tbody>"
        )
        for c in cookies:
            parts.append(
                f"<tr><td><code>{esc(c.name)}</code></td><td>{esc(c.provider or t['this_site'])}</td>"
                f"<td>{esc(c.purpose(locale))}</td>"
                f"<td>{esc(c.lifetime(locale))}</td><td>{esc(t[c.party])}</td></tr>"
            )
        parts.append("</tbody></table></div></section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def wants_json(request: Request) -> bool:
    """True when the request asks for JSON rather than HTML (``Accept: application/json`` first)."""
    accept = request.headers.get("accept", "").lower()
    if "application/json" not in accept:
        return False
    return "text/html" not in accept or accept.index("application/json") < accept.index("text/html")


def request_locale(request: Request, default: str) -> str:
    """``?lang=ko|en`` when given, else the best of Accept-Language, else ``default``."""
    given = request.query_params.get("lang")
    if given in ("ko", "en"):
        return given
    return choose_locale(request.headers.get("accept-language", ""), default)


class CookieDeclarationEndpoint:
    """``GET {prefix}/cookies``: the declaration as HTML (ko or en) or JSON.

    ``load_report`` reads the inventory (``read_inventory``); it runs in a thread at most once per
    ``cache_seconds``, so a burst of visitors costs ClickHouse one query. When it fails the page is
    still served from the registry and the catalogue.
    """

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        load_report: Callable[[], InventoryReport] | None = None,
        *,
        descriptions: Mapping[str, CookieDescription] | None = None,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self._load = load_report
        self._descriptions = descriptions
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Declaration] | None = None

    def __repr__(self) -> str:
        return f"CookieDeclarationEndpoint(prefix={self.settings.prefix!r})"

    async def declaration(self) -> Declaration:
        """The declaration, rebuilt when the cached one is older than ``cache_seconds``."""
        cached = self._cached
        if cached is not None and self._clock() - cached[0] < self._cache_seconds:
            return cached[1]
        report = None
        if self._load is not None:
            try:
                report = await asyncio.to_thread(self._load)
            except Exception:  # the registry and catalogue still make a useful page
                report = None
        built = build_declaration(self.settings, self.classifier, report, self._descriptions)
        with self._lock:
            self._cached = (self._clock(), built)
        return built

    async def handle(self, request: Request) -> Response:
        """Answer one request (a Starlette endpoint: ``Route(f"{prefix}/cookies", endpoint.handle)``)."""
        declaration = await self.declaration()
        headers = {"Vary": "Accept, Accept-Language", "Cache-Control": "public, max-age=300"}
        if wants_json(request):
            return JSONResponse(declaration.as_json(), headers=headers)
        locale = request_locale(request, self.settings.default_locale)
        return HTMLResponse(render_html(declaration, locale, self.settings.prefix), headers=headers)


# -- the privacy policy's section ---------------------------------------------------------------------

_BROWSERS = (
    (
        "Chrome",
        "설정 > 개인정보 보호 및 보안 > 서드 파티 쿠키",
        "Settings > Privacy and security > Third-party cookies",
    ),
    ("Edge", "설정 > 쿠키 및 사이트 권한", "Settings > Cookies and site permissions"),
    ("Safari", "설정 > 개인정보 보호", "Settings > Privacy"),
    (
        "Firefox",
        "설정 > 개인 정보 및 보안 > 쿠키 및 사이트 데이터",
        "Settings > Privacy & Security > Cookies and Site Data",
    ),
    ("Whale", "설정 > 개인정보 보호 > 쿠키 및 기타 사이트 데이터", "Settings > Privacy > Cookies and other site data"),
)

_SECTION = {
    "ko": {
        "title": "개인정보 자동수집 장치의 설치·운영 및 거부에 관한 사항",
        "what": "회사는 이용자에게 맞춤 서비스를 제공하고 서비스를 운영하기 위해 이용정보를 저장하고 수시로 "
        "불러오는 '쿠키(cookie)'를 사용합니다. 쿠키는 웹사이트가 이용자의 브라우저에 보내는 작은 정보로, "
        "이용자의 기기에 저장됩니다.",
        "list": "회사가 실제로 사용하는 쿠키는 다음과 같습니다(목적별).",
        "refuse_title": "쿠키 설치·운영의 거부",
        "refuse": "필수 쿠키를 제외한 쿠키는 이용자가 동의한 경우에만 사용합니다. 이용자는 언제든지 화면 하단의 "
        "'쿠키 설정'에서 동의를 바꾸거나 철회할 수 있으며, 웹 브라우저 설정으로 쿠키 저장을 거부할 수도 있습니다.",
        "browsers": "브라우저별 설정 방법",
        "consequence": "필수 쿠키의 저장을 거부하면 로그인 등 일부 서비스 이용이 어려울 수 있습니다. 그 밖의 쿠키를 "
        "거부해도 서비스 이용에는 제한이 없습니다.",
        "full": "전체 쿠키 목록",
        "none": "없음",
        "this_site": "회사",
        "cols": ("이름", "제공자", "목적", "보존 기간", "구분"),
        "first": "자사",
        "third": "제3자",
    },
    "en": {
        "title": "Installation, operation and refusal of devices that collect personal information automatically",
        "what": "We use cookies, small pieces of information a website sends to your browser and stores on your "
        "device, to run the service and to tailor it to you.",
        "list": "The cookies we really use are the following, by purpose.",
        "refuse_title": "Refusing cookies",
        "refuse": "Apart from strictly necessary cookies, we use cookies only with your consent. You can change or "
        "withdraw it at any time under 'Cookie settings' at the bottom of the page, and you can refuse cookies "
        "in your browser's settings.",
        "browsers": "Browser settings",
        "consequence": "Refusing strictly necessary cookies may make parts of the service, such as signing in, "
        "unavailable. Refusing any other cookie does not limit the service.",
        "full": "Full cookie list",
        "none": "None",
        "this_site": "Us",
        "cols": ("Name", "Provider", "Purpose", "Lifetime", "Party"),
        "first": "First party",
        "third": "Third party",
    },
}


def policy_section(declaration: Declaration, *, locale: str, fmt: str = "markdown", prefix: str = "/_consent") -> str:
    """The privacy policy's cookie section (PIPA Art. 30(1)7) in ``locale``, as Markdown or HTML."""
    if fmt not in ("markdown", "html"):
        raise ValueError(f"format {fmt!r} is not known; use markdown or html")
    t = _SECTION["ko" if locale == "ko" else "en"]
    rows: list[tuple[str, Sequence[Sequence[str]]]] = []
    for category, cookies in declaration.categories:
        rows.append(
            (
                category.name(locale),
                [
                    (c.name, c.provider or str(t["this_site"]), c.purpose(locale), c.lifetime(locale), str(t[c.party]))
                    for c in cookies
                ],
            )
        )
    browsers = [(b, ko if locale == "ko" else en) for b, ko, en in _BROWSERS]
    link = f"{prefix}/cookies?lang={locale}"
    if fmt == "html":
        return _section_html(t, rows, browsers, link)
    return _section_markdown(t, rows, browsers, link)


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _section_markdown(
    t: Mapping[str, Any], rows: list[tuple[str, Sequence[Sequence[str]]]], browsers: list[tuple[str, str]], link: str
) -> str:
    out = [f"## {t['title']}", "", str(t["what"]), "", str(t["list"]), ""]
    for name, cookies in rows:
        out += [f"### {_md(name)}", ""]
        if not cookies:
            out += [str(t["none"]), ""]
            continue
        out.append("| " + " | ".join(t["cols"]) + " |")
        out.append("|" + "---|" * len(t["cols"]))
        out += ["| " + " | ".join(_md(v) for v in row) + " |" for row in cookies]
        out.append("")
    out += [f"### {t['refuse_title']}", "", str(t["refuse"]), "", f"{t['browsers']}:", ""]
    out += [f"- {b}: {path}" for b, path in browsers]
    out += ["", str(t["consequence"]), "", f"{t['full']}: <{link}>", ""]
    return "\n".join(out)


def _section_html(
    t: Mapping[str, Any], rows: list[tuple[str, Sequence[Sequence[str]]]], browsers: list[tuple[str, str]], link: str
) -> str:
    esc = html.escape
    out = [f"<section><h2>{esc(t['title'])}</h2><p>{esc(t['what'])}</p><p>{esc(t['list'])}</p>"]
    for name, cookies in rows:
        out.append(f"<h3>{esc(name)}</h3>")
        if not cookies:
            out.append(f"<p>{esc(t['none'])}</p>")
            continue
        out.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in t["cols"]) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in cookies]
        out.append("</tbody></table>")
    out.append(f"<h3>{esc(t['refuse_title'])}</h3><p>{esc(t['refuse'])}</p><p>{esc(t['browsers'])}</p><ul>")
    out += [f"<li>{esc(b)}: {esc(path)}</li>" for b, path in browsers]
    out.append(f'</ul><p>{esc(t["consequence"])}</p><p><a href="{esc(link)}">{esc(t["full"])}</a></p></section>')
    return "".join(out)


def declaration_json(declaration: Declaration) -> str:
    """The declaration as indented JSON text (for files and the CLI)."""
    return json.dumps(declaration.as_json(), ensure_ascii=False, indent=2)
