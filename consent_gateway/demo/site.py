"""The bare demo website: "팔레트", a small art-academy management SaaS.

The site knows nothing about the consent gateway. It behaves like a typical
third-party-laden web app so the gateway has something realistic to wrap:

* every HTML page sets an analytics id (``_pa_id``) and a marketing pixel id
  (``_mk_px``) from the server when the visitor does not have them yet;
* logging in sets a necessary session cookie (``palette_session``);
* the language switch sets a language cookie (``ui_lang``), necessary in the demo's settings
  because only the visitor's own button press sets it;
* every page carries two consent-gated ``<script type="text/plain">`` tags that
  only a consent banner may activate.

Pages are plain f-strings with ``html.escape`` on every dynamic value and no
inline scripts, inline styles or event-handler attributes, so they work under a
strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = [
    "ANALYTICS_COOKIE",
    "LANGUAGE_COOKIE",
    "MARKETING_COOKIE",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "create_demo_app",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""Folder served at ``/static``."""

SESSION_COOKIE = "palette_session"
"""Necessary: login session token (HttpOnly, SameSite=Lax)."""
LANGUAGE_COOKIE = "ui_lang"
"""UI language, ``ko`` or ``en``, set by the visitor's language button (necessary in demo.toml)."""
ANALYTICS_COOKIE = "_pa_id"
"""Analytics: server-set visitor id (HttpOnly)."""
MARKETING_COOKIE = "_mk_px"
"""Marketing: server-set advertising pixel id."""

ONE_YEAR = 365 * 24 * 60 * 60
NINETY_DAYS = 90 * 24 * 60 * 60

# Sized for a demo: enough for a browser test run, small enough that a
# forgotten server cannot grow without bound.
_MAX_SESSIONS = 10_000
_MAX_FORM_BYTES = 64 * 1024
STREAM_EVENTS = 3
STREAM_INTERVAL_SECONDS = 0.05

SEOUL = ZoneInfo("Asia/Seoul")

Lang = str  # "ko" | "en"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Student:
    """A fictional student; none of these people exist."""

    id: int
    name: str
    grade: tuple[str, str]  # (ko, en)
    course: tuple[str, str]
    teacher: str
    weekdays: tuple[int, ...]  # 0 = Monday
    enrolled: date
    active: bool = True


STUDENTS: tuple[Student, ...] = (
    Student(
        1, "김하늘", ("초등 3학년", "Grade 3"), ("기초 드로잉", "Basic drawing"), "오선생", (0, 2), date(2024, 3, 4)
    ),
    Student(2, "이서준", ("초등 5학년", "Grade 5"), ("수채화", "Watercolour"), "민선생", (1, 3), date(2023, 9, 1)),
    Student(
        3, "박지우", ("중학 1학년", "Grade 7"), ("입시 소묘", "Exam sketching"), "오선생", (0, 2, 4), date(2024, 1, 8)
    ),
    Student(4, "최예린", ("초등 2학년", "Grade 2"), ("창의 미술", "Creative art"), "윤선생", (1, 3), date(2024, 5, 20)),
    Student(
        5,
        "정민호",
        ("중학 2학년", "Grade 8"),
        ("디지털 드로잉", "Digital drawing"),
        "민선생",
        (2, 5),
        date(2023, 11, 13),
    ),
    Student(6, "강소윤", ("초등 4학년", "Grade 4"), ("수채화", "Watercolour"), "민선생", (1, 3), date(2024, 2, 26)),
    Student(
        7, "윤도현", ("고등 1학년", "Grade 10"), ("입시 소묘", "Exam sketching"), "오선생", (0, 2, 4), date(2023, 3, 6)
    ),
    Student(
        8,
        "한가온",
        ("초등 6학년", "Grade 6"),
        ("기초 드로잉", "Basic drawing"),
        "윤선생",
        (4, 5),
        date(2024, 6, 3),
        active=False,
    ),
)

_STUDENTS_BY_ID = {s.id: s for s in STUDENTS}


@dataclass(frozen=True, slots=True)
class Artwork:
    """A portfolio piece drawn as inline SVG (no external images)."""

    title: tuple[str, str]
    student_id: int
    medium: tuple[str, str]
    svg_body: str  # trusted, hand-written shapes only


# Presentation attributes (fill=, stroke=) rather than style= keep the art
# CSP-clean; the shapes are constants, never user input.
ARTWORKS: tuple[Artwork, ...] = (
    Artwork(
        ("노을 언덕", "Sunset hills"),
        2,
        ("수채화", "Watercolour"),
        '<rect width="120" height="90" fill="#ffd8a8"/>'
        '<circle cx="84" cy="34" r="14" fill="#f76707"/>'
        '<path d="M0 70 Q30 45 60 66 T120 60 V90 H0Z" fill="#2b8a3e"/>'
        '<path d="M0 80 Q40 62 80 78 T120 76 V90 H0Z" fill="#1b5e20"/>',
    ),
    Artwork(
        ("고양이 낮잠", "Cat nap"),
        1,
        ("색연필", "Coloured pencil"),
        '<rect width="120" height="90" fill="#e7f5ff"/>'
        '<ellipse cx="60" cy="62" rx="34" ry="16" fill="#495057"/>'
        '<circle cx="34" cy="52" r="13" fill="#495057"/>'
        '<path d="M24 44 L27 32 L33 41Z M36 41 L42 32 L44 44Z" fill="#495057"/>'
        '<path d="M92 60 Q110 50 104 36" fill="none" stroke="#495057" stroke-width="5"'
        ' stroke-linecap="round"/>',
    ),
    Artwork(
        ("원의 리듬", "Rhythm of circles"),
        4,
        ("아크릴", "Acrylic"),
        '<rect width="120" height="90" fill="#fff9db"/>'
        '<circle cx="30" cy="45" r="22" fill="#e64980"/>'
        '<circle cx="60" cy="40" r="18" fill="#7048e8" opacity="0.85"/>'
        '<circle cx="88" cy="50" r="20" fill="#1098ad" opacity="0.85"/>'
        '<circle cx="60" cy="66" r="9" fill="#fab005"/>',
    ),
    Artwork(
        ("우리 동네", "My neighbourhood"),
        6,
        ("수채화", "Watercolour"),
        '<rect width="120" height="90" fill="#d0ebff"/>'
        '<rect x="14" y="40" width="30" height="38" fill="#ffa94d"/>'
        '<path d="M10 42 L29 24 L48 42Z" fill="#c92a2a"/>'
        '<rect x="54" y="30" width="24" height="48" fill="#868e96"/>'
        '<rect x="84" y="48" width="26" height="30" fill="#ffe066"/>'
        '<path d="M80 50 L97 36 L114 50Z" fill="#5c940d"/>'
        '<rect y="78" width="120" height="12" fill="#495057"/>',
    ),
    Artwork(
        ("석고 구 소묘", "Plaster sphere study"),
        7,
        ("연필", "Graphite"),
        '<rect width="120" height="90" fill="#f1f3f5"/>'
        '<ellipse cx="62" cy="76" rx="34" ry="6" fill="#adb5bd"/>'
        '<circle cx="60" cy="46" r="28" fill="#868e96"/>'
        '<circle cx="52" cy="38" r="18" fill="#ced4da"/>'
        '<circle cx="47" cy="33" r="7" fill="#f8f9fa"/>',
    ),
    Artwork(
        ("파도", "Waves"),
        5,
        ("디지털", "Digital"),
        '<rect width="120" height="90" fill="#0b7285"/>'
        '<path d="M0 40 Q15 28 30 40 T60 40 T90 40 T120 40 V90 H0Z" fill="#15aabf"/>'
        '<path d="M0 58 Q15 46 30 58 T60 58 T90 58 T120 58 V90 H0Z" fill="#66d9e8"/>'
        '<path d="M0 74 Q15 64 30 74 T60 74 T90 74 T120 74 V90 H0Z" fill="#e3fafc"/>',
    ),
)

# --------------------------------------------------------------------------- i18n

_TEXT: dict[str, dict[Lang, str]] = {
    "brand": {"ko": "팔레트", "en": "Palette"},
    "tagline": {"ko": "미술학원 관리", "en": "Art academy manager"},
    "skip": {"ko": "본문 바로가기", "en": "Skip to content"},
    "nav_label": {"ko": "주 메뉴", "en": "Main menu"},
    "nav_home": {"ko": "홈", "en": "Home"},
    "nav_students": {"ko": "원생 관리", "en": "Students"},
    "nav_portfolio": {"ko": "포트폴리오", "en": "Portfolio"},
    "nav_attendance": {"ko": "출결", "en": "Attendance"},
    "login": {"ko": "로그인", "en": "Log in"},
    "logout": {"ko": "로그아웃", "en": "Log out"},
    "privacy": {"ko": "개인정보처리방침", "en": "Privacy policy"},
    "language": {"ko": "언어", "en": "Language"},
    "footer_note": {
        "ko": "데모 서비스입니다. 모든 원생 정보는 가상의 데이터입니다.",
        "en": "Demo service. All student data is fictional.",
    },
    "home_title": {"ko": "오늘의 학원", "en": "Today at the academy"},
    "students_title": {"ko": "원생 관리", "en": "Students"},
    "portfolio_title": {"ko": "포트폴리오", "en": "Portfolio"},
    "attendance_title": {"ko": "이번 주 출결", "en": "This week's attendance"},
    "login_title": {"ko": "로그인", "en": "Log in"},
    "privacy_title": {"ko": "개인정보처리방침", "en": "Privacy policy"},
    "not_found_title": {"ko": "페이지를 찾을 수 없습니다", "en": "Page not found"},
    "error_title": {"ko": "요청을 처리할 수 없습니다", "en": "The request could not be handled"},
}


def _t(key: str, lang: Lang) -> str:
    """Look up a UI string, already HTML-escaped."""
    return html.escape(_TEXT[key][lang])


def _pick(pair: tuple[str, str], lang: Lang) -> str:
    """Pick the (ko, en) variant for ``lang``, HTML-escaped."""
    return html.escape(pair[1] if lang == "en" else pair[0])


def _ko(text: str, lang: Lang) -> str:
    """Escape Korean-only text, marking its language on English pages for screen readers."""
    escaped = html.escape(text)
    return f'<span lang="ko">{escaped}</span>' if lang == "en" else escaped


def _request_lang(request: Request) -> Lang:
    """UI language from the ``ui_lang`` cookie; Korean unless it says ``en``."""
    return "en" if request.cookies.get(LANGUAGE_COOKIE) == "en" else "ko"


# --------------------------------------------------------------------------- attendance


def _today() -> date:
    """Today in Seoul; a function so tests can pin the date."""
    return datetime.now(SEOUL).date()


def _week_of(day: date) -> list[date]:
    """Monday to Saturday of the week containing ``day`` (the academy is closed Sundays)."""
    monday = day - timedelta(days=day.weekday())
    return [monday + timedelta(days=i) for i in range(6)]


_STATUS_LABELS: dict[str, tuple[str, str]] = {
    "present": ("출석", "Present"),
    "late": ("지각", "Late"),
    "absent": ("결석", "Absent"),
    "scheduled": ("예정", "Scheduled"),
    "paused": ("휴원", "On break"),
    "none": ("수업 없음", "No class"),
}


def _attendance_status(student: Student, day: date, today: date) -> str:
    """Deterministic fake attendance, so every run of the demo shows the same week."""
    if not student.active:
        return "paused"
    if day.weekday() not in student.weekdays:
        return "none"
    if day > today:
        return "scheduled"
    digest = hashlib.sha256(f"{student.id}:{day.isoformat()}".encode()).digest()
    roll = digest[0] % 10
    if roll == 0:
        return "absent"
    if roll == 1:
        return "late"
    return "present"


def _attendance_week(today: date) -> dict[str, Any]:
    """The week's attendance as plain data (used by the page and the JSON API)."""
    week = _week_of(today)
    students = []
    counts = {key: 0 for key in _STATUS_LABELS}
    for student in STUDENTS:
        records = {}
        for day in week:
            status = _attendance_status(student, day, today)
            records[day.isoformat()] = status
            counts[status] += 1
        students.append(
            {
                "id": student.id,
                "name": student.name,
                "course": student.course[0],
                "records": records,
            }
        )
    return {
        "today": today.isoformat(),
        "week": [day.isoformat() for day in week],
        "students": students,
        "summary": {k: counts[k] for k in ("present", "late", "absent", "scheduled")},
    }


# --------------------------------------------------------------------------- layout

_NAV: tuple[tuple[str, str], ...] = (
    ("/", "nav_home"),
    ("/students", "nav_students"),
    ("/portfolio", "nav_portfolio"),
    ("/attendance", "nav_attendance"),
)

# Exactly the markup the consent banner looks for; kept verbatim on every page.
GATED_SCRIPTS = (
    '<script type="text/plain" data-consent="analytics" '
    'data-src="/static/analytics-demo.js"></script>\n'
    '<script type="text/plain" data-consent="marketing" '
    'data-src="/static/marketing-demo.js"></script>'
)


def _current_user(request: Request) -> str | None:
    """Username for a valid session cookie, else ``None``."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    sessions: dict[str, str] = request.app.state.sessions
    return sessions.get(token)


def _layout(request: Request, *, lang: Lang, title: str, active: str, main: str) -> str:
    """Wrap page content (already escaped HTML) in the shared document shell.

    ``title`` is plain text and gets escaped here.
    """
    nav_items = []
    for href, key in _NAV:
        current = ' aria-current="page"' if href == active else ""
        nav_items.append(f'<li><a href="{href}"{current}>{_t(key, lang)}</a></li>')
    nav = "\n".join(nav_items)

    user = _current_user(request)
    if user is None:
        current = ' aria-current="page"' if active == "/login" else ""
        account = f'<a class="button button-ghost" href="/login"{current}>{_t("login", lang)}</a>'
    else:
        account = (
            f'<span class="user-name">{html.escape(user)}</span>'
            f'<form method="post" action="/logout" class="inline-form">'
            f'<button type="submit" class="button button-ghost">{_t("logout", lang)}</button>'
            f"</form>"
        )

    lang_buttons = "".join(
        f'<button type="submit" name="lang" value="{code}" class="button button-small"'
        f' aria-pressed="{"true" if code == lang else "false"}" lang="{code}">{label}</button>'
        for code, label in (("ko", "한국어"), ("en", "English"))
    )
    year = _today().year
    description = "Palette: an art academy management demo" if lang == "en" else "팔레트: 미술학원 관리 데모 서비스"

    return f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="description" content="{html.escape(description)}">
<title>{html.escape(title)} · {_t("brand", lang)}</title>
<link rel="icon" href="/static/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/site.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="site-header">
<a class="skip-link" href="#main">{_t("skip", lang)}</a>
<div class="header-inner">
<a class="brand" href="/">
<img src="/static/logo.svg" alt="" width="32" height="32">
<span class="brand-name">{_t("brand", lang)}</span>
<span class="brand-tagline">{_t("tagline", lang)}</span>
</a>
<nav class="site-nav" aria-label="{_t("nav_label", lang)}">
<ul>
{nav}
</ul>
</nav>
<div class="account">{account}</div>
</div>
</header>
<main id="main" class="site-main" tabindex="-1">
{main}
</main>
<footer class="site-footer">
<div class="footer-inner">
<p>© {year} {_t("brand", lang)} · {_t("footer_note", lang)}</p>
<p><a href="/privacy">{_t("privacy", lang)}</a></p>
<form method="post" action="/settings/language" class="lang-form">
<span class="lang-label">{_t("language", lang)}</span>
{lang_buttons}
</form>
</div>
</footer>
{GATED_SCRIPTS}
</body>
</html>
"""


def _set_tracking_cookies(request: Request, response: Response) -> None:
    """Mint analytics/marketing ids the way ad-tech-heavy sites do: on first page view."""
    if ANALYTICS_COOKIE not in request.cookies:
        response.set_cookie(
            ANALYTICS_COOKIE,
            secrets.token_hex(16),
            max_age=ONE_YEAR,
            path="/",
            httponly=True,
            samesite="lax",
        )
    if MARKETING_COOKIE not in request.cookies:
        response.set_cookie(
            MARKETING_COOKIE,
            secrets.token_hex(12),
            max_age=NINETY_DAYS,
            path="/",
            samesite="lax",
        )


def _page(
    request: Request,
    *,
    title: str,
    active: str,
    main: str,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a full HTML page response, including the tracking cookies."""
    lang = _request_lang(request)
    body = _layout(request, lang=lang, title=title, active=active, main=main)
    response = HTMLResponse(body, status_code=status_code, headers=dict(headers or {}))
    # Pages vary by session and language cookies; never let a shared cache keep them.
    response.headers["Cache-Control"] = "no-store"
    _set_tracking_cookies(request, response)
    return response


async def _read_form(request: Request) -> dict[str, str]:
    """Parse an urlencoded form body (python-multipart is not a dependency)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPException(status_code=413)
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


# --------------------------------------------------------------------------- pages


async def home(request: Request) -> HTMLResponse:
    """Dashboard tiles: head count, today's attendance, portfolio and next class."""
    lang = _request_lang(request)
    data = _attendance_week(_today())
    today_key = str(data["today"])
    # The week runs Monday to Saturday: on a Sunday (the academy is closed) no one has a record.
    today_statuses = [s["records"].get(today_key, "none") for s in data["students"]]
    expected = [s for s in today_statuses if s in ("present", "late", "absent")]
    attended = [s for s in expected if s in ("present", "late")]
    active_count = sum(1 for s in STUDENTS if s.active)

    if expected:
        rate = f"{round(100 * len(attended) / len(expected))}%"
        rate_note = (
            f"{len(attended)} / {len(expected)} attended"
            if lang == "en"
            else f"{len(expected)}명 중 {len(attended)}명 출석"
        )
    else:
        rate = "—"
        rate_note = "No classes today" if lang == "en" else "오늘은 수업이 없습니다"

    if lang == "en":
        tiles = (
            (
                "tile-students",
                "Enrolled students",
                str(active_count),
                f"{len(STUDENTS) - active_count} on break",
                "/students",
                "Manage students",
            ),
            ("tile-attendance", "Today's attendance", rate, rate_note, "/attendance", "View attendance"),
            (
                "tile-portfolio",
                "Portfolio pieces",
                str(len(ARTWORKS)),
                "Uploaded this month",
                "/portfolio",
                "Open portfolio",
            ),
            ("tile-class", "Next class", "16:00", "Watercolour · Room 2", "/attendance", "See schedule"),
        )
        notices = (
            "Materials fee for watercolour class is due on the 25th.",
            "The spring exhibition opens on Saturday at 11:00.",
            "Room 3 is closed for cleaning on Wednesday afternoon.",
        )
        notices_title = "Notices"
    else:
        tiles = (
            (
                "tile-students",
                "재원생",
                f"{active_count}명",
                f"휴원 {len(STUDENTS) - active_count}명",
                "/students",
                "원생 관리로 이동",
            ),
            ("tile-attendance", "오늘 출석률", rate, rate_note, "/attendance", "출결 보기"),
            (
                "tile-portfolio",
                "포트폴리오 작품",
                f"{len(ARTWORKS)}점",
                "이번 달 업로드",
                "/portfolio",
                "포트폴리오 열기",
            ),
            ("tile-class", "다음 수업", "오후 4:00", "수채화반 · 2강의실", "/attendance", "시간표 보기"),
        )
        notices = (
            "수채화반 재료비는 25일까지 납부해 주세요.",
            "봄 전시회가 토요일 오전 11시에 열립니다.",
            "수요일 오후에는 3강의실 청소로 수업이 없습니다.",
        )
        notices_title = "공지사항"

    tile_html = "\n".join(
        f'<section class="tile {cls}" aria-labelledby="{cls}-h">'
        f'<h2 id="{cls}-h" class="tile-label">{html.escape(label)}</h2>'
        f'<p class="tile-value">{html.escape(value)}</p>'
        f'<p class="tile-note">{html.escape(note)}</p>'
        f'<a class="tile-link" href="{href}">{html.escape(link)}</a>'
        f"</section>"
        for cls, label, value, note, href, link in tiles
    )
    notice_html = "\n".join(f"<li>{html.escape(n)}</li>" for n in notices)
    main = f"""<h1>{_t("home_title", lang)}</h1>
<div class="tiles">
{tile_html}
</div>
<section class="card" aria-labelledby="notices-h">
<h2 id="notices-h">{html.escape(notices_title)}</h2>
<ul class="notice-list">
{notice_html}
</ul>
</section>"""
    return _page(request, title=_TEXT["home_title"][lang], active="/", main=main)


async def students_page(request: Request) -> HTMLResponse:
    """Table of the eight fictional students."""
    lang = _request_lang(request)
    user = _current_user(request)
    en = lang == "en"
    headers = (
        ("No.", "Name", "Grade", "Class", "Teacher", "Enrolled", "Status")
        if en
        else ("번호", "이름", "학년", "수업", "담당", "등록일", "상태")
    )
    head_html = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in headers)
    rows = []
    for s in STUDENTS:
        status_key = "active" if s.active else "paused"
        status = ("Enrolled" if en else "재원") if s.active else ("On break" if en else "휴원")
        rows.append(
            "<tr>"
            f"<td>{s.id}</td>"
            f'<th scope="row">{_ko(s.name, lang)}</th>'
            f"<td>{_pick(s.grade, lang)}</td>"
            f"<td>{_pick(s.course, lang)}</td>"
            f"<td>{_ko(s.teacher, lang)}</td>"
            f'<td><time datetime="{s.enrolled.isoformat()}">{s.enrolled.isoformat()}</time></td>'
            f'<td><span class="badge badge-{status_key}">{html.escape(status)}</span></td>'
            "</tr>"
        )
    if user is not None:
        greeting = f"Welcome, {html.escape(user)}." if en else f"{html.escape(user)}님, 환영합니다."
        welcome = f'<p class="welcome" role="status">{greeting}</p>'
    else:
        welcome = ""
    filter_label = "Filter by name or class" if en else "이름 또는 수업으로 찾기"
    caption = f"All students ({len(STUDENTS)})" if en else f"전체 원생 ({len(STUDENTS)}명)"
    note = (
        "Every name on this page is made up for the demo." if en else "이 페이지의 이름은 모두 데모용 가상 인물입니다."
    )
    # The filter box is hidden until app.js wires it up, so no-JS visitors
    # never see a control that does nothing.
    main = f"""<h1>{_t("students_title", lang)}</h1>
{welcome}
<p class="lead">{html.escape(note)}</p>
<div class="table-filter" data-table-filter hidden>
<label for="student-filter">{html.escape(filter_label)}</label>
<input id="student-filter" type="search" autocomplete="off" data-filter-target="students-table">
</div>
<div class="table-wrap" role="region" aria-labelledby="students-caption" tabindex="0">
<table id="students-table" class="data-table">
<caption id="students-caption">{html.escape(caption)}</caption>
<thead><tr>{head_html}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</div>"""
    return _page(request, title=_TEXT["students_title"][lang], active="/students", main=main)


async def portfolio_page(request: Request) -> HTMLResponse:
    """Grid of student drawings rendered as inline SVG."""
    lang = _request_lang(request)
    cards = []
    for index, art in enumerate(ARTWORKS, start=1):
        title = _pick(art.title, lang)
        student = _STUDENTS_BY_ID[art.student_id]
        cards.append(
            f'<li><figure class="art-card">'
            f'<svg class="art" viewBox="0 0 120 90" role="img" aria-labelledby="art-{index}-t"'
            f' xmlns="http://www.w3.org/2000/svg" focusable="false">'
            f'<title id="art-{index}-t">{title}</title>{art.svg_body}</svg>'
            f'<figcaption><span class="art-title">{title}</span>'
            f'<span class="art-meta">{_ko(student.name, lang)} · {_pick(art.medium, lang)}</span>'
            f"</figcaption></figure></li>"
        )
    lead = "Recent work from our classes." if lang == "en" else "최근 수업에서 완성한 작품들입니다."
    main = f"""<h1>{_t("portfolio_title", lang)}</h1>
<p class="lead">{html.escape(lead)}</p>
<ul class="art-grid">
{chr(10).join(cards)}
</ul>"""
    return _page(request, title=_TEXT["portfolio_title"][lang], active="/portfolio", main=main)


_WEEKDAYS_KO = ("월", "화", "수", "목", "금", "토", "일")
_WEEKDAYS_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


async def attendance_page(request: Request) -> HTMLResponse:
    """This week's attendance, one row per student and one column per day."""
    lang = _request_lang(request)
    en = lang == "en"
    today = _today()
    week = _week_of(today)
    names = _WEEKDAYS_EN if en else _WEEKDAYS_KO

    head = ['<th scope="col">' + ("Student" if en else "원생") + "</th>"]
    for day in week:
        current = ' aria-current="date" class="is-today"' if day == today else ""
        head.append(
            f'<th scope="col"{current}><time datetime="{day.isoformat()}">'
            f"{names[day.weekday()]} {day.month}/{day.day}</time></th>"
        )
    rows = []
    for student in STUDENTS:
        cells = [f'<th scope="row">{_ko(student.name, lang)}</th>']
        for day in week:
            status = _attendance_status(student, day, today)
            label = _pick(_STATUS_LABELS[status], lang)
            if status == "none":
                # A quiet dash for sighted users; screen readers still hear the status.
                cells.append(
                    f'<td class="no-class"><span class="visually-hidden">{label}</span>'
                    '<span aria-hidden="true">&ndash;</span></td>'
                )
            else:
                cells.append(f'<td><span class="badge badge-{status}">{label}</span></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")

    summary = _attendance_week(today)["summary"]
    summary_items = "".join(
        f'<li><span class="badge badge-{key}">{_pick(_STATUS_LABELS[key], lang)}</span> {summary[key]}</li>'
        for key in ("present", "late", "absent", "scheduled")
    )
    caption = f"Week of {week[0].isoformat()}" if en else f"{week[0].isoformat()} 주간 출결"
    api_note = "JSON:" if en else "JSON 데이터:"
    main = f"""<h1>{_t("attendance_title", lang)}</h1>
<ul class="summary" aria-label="{"Summary" if en else "요약"}">{summary_items}</ul>
<div class="table-wrap" role="region" aria-labelledby="attendance-caption" tabindex="0">
<table class="data-table attendance-table">
<caption id="attendance-caption">{html.escape(caption)}</caption>
<thead><tr>{"".join(head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</div>
<p class="muted">{api_note} <a href="/api/attendance">/api/attendance</a></p>"""
    return _page(request, title=_TEXT["attendance_title"][lang], active="/attendance", main=main)


def _login_form(request: Request, *, error: str | None, username: str) -> HTMLResponse:
    lang = _request_lang(request)
    en = lang == "en"
    error_html = f'<p class="form-error" role="alert">{html.escape(error)}</p>' if error else ""
    hint = (
        "Demo: any username works; the password is not checked."
        if en
        else "데모: 아무 아이디나 입력하면 로그인됩니다. 비밀번호는 확인하지 않습니다."
    )
    main = f"""<h1>{_t("login_title", lang)}</h1>
<form method="post" action="/login" class="card form-card">
{error_html}
<div class="field">
<label for="username">{"Username" if en else "아이디"}</label>
<input id="username" name="username" type="text" autocomplete="username" required
 value="{html.escape(username)}">
</div>
<div class="field">
<label for="password">{"Password" if en else "비밀번호"}</label>
<input id="password" name="password" type="password" autocomplete="current-password">
</div>
<p class="muted">{html.escape(hint)}</p>
<button type="submit" class="button">{_t("login", lang)}</button>
</form>"""
    return _page(
        request,
        title=_TEXT["login_title"][lang],
        active="/login",
        main=main,
        status_code=400 if error else 200,
    )


async def login_get(request: Request) -> HTMLResponse:
    """Login form."""
    return _login_form(request, error=None, username="")


async def login_post(request: Request) -> Response:
    """Log in with any non-empty username, then 303 to the student list."""
    form = await _read_form(request)
    username = form.get("username", "").strip()
    if not username:
        message = "Please enter a username." if _request_lang(request) == "en" else "아이디를 입력해 주세요."
        return _login_form(request, error=message, username="")

    sessions: dict[str, str] = request.app.state.sessions
    if len(sessions) >= _MAX_SESSIONS:
        sessions.pop(next(iter(sessions)))  # dicts keep insertion order: drop the oldest
    token = secrets.token_urlsafe(32)
    sessions[token] = username[:64]
    response = RedirectResponse("/students", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="lax")
    return response


async def logout(request: Request) -> Response:
    """Forget the session and clear its cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        request.app.state.sessions.pop(token, None)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


def _safe_back_path(referer: str | None) -> str:
    """Local path from a Referer header; anything odd falls back to ``/``.

    Only the path is kept so the redirect can never leave the site.
    """
    if not referer:
        return "/"
    try:
        path = urlsplit(referer).path
    except ValueError:
        return "/"
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def set_language(request: Request) -> Response:
    """Store the UI-language preference and go back where the visitor came from."""
    form = await _read_form(request)
    lang = form.get("lang", "")
    if lang not in ("ko", "en"):
        raise HTTPException(status_code=400, detail="lang must be ko or en")
    response = RedirectResponse(_safe_back_path(request.headers.get("referer")), status_code=303)
    response.set_cookie(LANGUAGE_COOKIE, lang, max_age=ONE_YEAR, path="/", samesite="lax")
    return response


async def privacy_page(request: Request) -> HTMLResponse:
    """Short privacy notice describing what the site collects and why."""
    lang = _request_lang(request)
    if lang == "en":
        sections = (
            (
                "What we keep",
                "Service visit logs (pages visited, time, browser type) are kept for 3 months "
                "to run and secure the service, then deleted.",
            ),
            (
                "Analytics",
                "Usage statistics are computed only on pseudonymised data. "
                "They never identify an individual student or guardian.",
            ),
            (
                "Marketing",
                "Marketing cookies and messages are used only if you give optional consent. "
                "Refusing does not limit any feature of the service.",
            ),
            (
                "Refusing cookies",
                "You may refuse optional cookies at any time, in the cookie banner or in your "
                "browser settings. Only cookies needed for log-in and security remain.",
            ),
        )
        cookie_head = ("Cookie", "Purpose", "Kept for")
        cookies = (
            (SESSION_COOKIE, "Necessary: keeps you logged in", "Until you log out"),
            (LANGUAGE_COOKIE, "Preferences: interface language", "1 year"),
            (f"{ANALYTICS_COOKIE}, _pa_js", "Analytics: visit statistics", "1 year"),
            (f"{MARKETING_COOKIE}, _mk_js", "Marketing: campaign measurement", "90 days"),
        )
        cookie_title = "Cookies we use"
        cookie_caption = "Cookie names, purposes and retention"
        contact = "Questions: privacy@palette.example"
    else:
        sections = (
            (
                "보관하는 정보",
                "서비스 방문 기록(방문한 페이지, 시각, 브라우저 종류)은 서비스 운영과 보안을 위해 "
                "3개월간 보관한 뒤 파기합니다.",
            ),
            ("통계 분석", "이용 통계는 가명처리된 데이터로만 분석하며, 특정 원생이나 보호자를 식별하지 않습니다."),
            (
                "마케팅",
                "마케팅 쿠키와 안내는 선택 동의를 한 경우에만 사용합니다. 동의하지 않아도 서비스 "
                "이용에는 제한이 없습니다.",
            ),
            (
                "쿠키 거부",
                "선택 쿠키는 쿠키 배너나 브라우저 설정에서 언제든지 거부할 수 있습니다. 거부하면 "
                "로그인과 보안에 꼭 필요한 쿠키만 사용합니다.",
            ),
        )
        cookie_head = ("쿠키", "목적", "보관 기간")
        cookies = (
            (SESSION_COOKIE, "필수: 로그인 유지", "로그아웃할 때까지"),
            (LANGUAGE_COOKIE, "환경설정: 화면 언어", "1년"),
            (f"{ANALYTICS_COOKIE}, _pa_js", "분석: 방문 통계", "1년"),
            (f"{MARKETING_COOKIE}, _mk_js", "마케팅: 광고 효과 측정", "90일"),
        )
        cookie_title = "사용하는 쿠키"
        cookie_caption = "쿠키 이름, 목적, 보관 기간"
        contact = "문의: privacy@palette.example"

    section_html = "\n".join(
        f'<section aria-labelledby="privacy-{i}"><h2 id="privacy-{i}">{html.escape(h)}</h2>'
        f"<p>{html.escape(p)}</p></section>"
        for i, (h, p) in enumerate(sections, start=1)
    )
    cookie_rows = "\n".join(
        f'<tr><th scope="row"><code>{html.escape(name)}</code></th>'
        f"<td>{html.escape(purpose)}</td><td>{html.escape(kept)}</td></tr>"
        for name, purpose, kept in cookies
    )
    cookie_head_html = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in cookie_head)
    main = f"""<h1>{_t("privacy_title", lang)}</h1>
<div class="prose">
{section_html}
<section aria-labelledby="privacy-cookies">
<h2 id="privacy-cookies">{html.escape(cookie_title)}</h2>
<div class="table-wrap" role="region" aria-labelledby="privacy-cookies-caption" tabindex="0">
<table class="data-table">
<caption id="privacy-cookies-caption">{html.escape(cookie_caption)}</caption>
<thead><tr>{cookie_head_html}</tr></thead>
<tbody>
{cookie_rows}
</tbody>
</table>
</div>
</section>
<p class="muted">{html.escape(contact)}</p>
</div>"""
    return _page(request, title=_TEXT["privacy_title"][lang], active="/privacy", main=main)


async def attendance_api(request: Request) -> JSONResponse:
    """This week's attendance as JSON."""
    return JSONResponse(_attendance_week(_today()), headers={"Cache-Control": "no-store"})


async def _events() -> AsyncIterator[str]:
    for seq in range(1, STREAM_EVENTS + 1):
        yield f'data: {{"seq": {seq}, "of": {STREAM_EVENTS}}}\n\n'
        if seq < STREAM_EVENTS:
            # A real pause between events, so a buffering proxy is observable.
            await asyncio.sleep(STREAM_INTERVAL_SECONDS)


async def stream(request: Request) -> StreamingResponse:
    """Server-sent events: three small events, then the stream ends."""
    return StreamingResponse(
        _events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """HTML error pages (404 and friends) in the site's own look."""
    if not isinstance(exc, HTTPException):  # only registered for HTTPException
        raise exc
    lang = _request_lang(request)
    en = lang == "en"
    if exc.status_code == 404:
        title = _TEXT["not_found_title"][lang]
        message = (
            "The page you asked for does not exist or has moved."
            if en
            else "요청하신 페이지가 없거나 주소가 바뀌었습니다."
        )
    else:
        title = _TEXT["error_title"][lang]
        message = f"HTTP {exc.status_code}: {exc.detail}"
    back = "Back to home" if en else "홈으로 돌아가기"
    main = f"""<h1>{html.escape(title)}</h1>
<p class="lead">{html.escape(message)}</p>
<p><a class="button" href="/">{html.escape(back)}</a></p>"""
    return _page(
        request,
        title=title,
        active="",
        main=main,
        status_code=exc.status_code,
        headers=exc.headers,
    )


def create_demo_app() -> Starlette:
    """Build the bare "팔레트" demo site (no consent gateway in front of it)."""
    routes = [
        Route("/", home, methods=["GET"]),
        Route("/students", students_page, methods=["GET"]),
        Route("/portfolio", portfolio_page, methods=["GET"]),
        Route("/attendance", attendance_page, methods=["GET"]),
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/privacy", privacy_page, methods=["GET"]),
        Route("/settings/language", set_language, methods=["POST"]),
        Route("/api/attendance", attendance_api, methods=["GET"]),
        Route("/stream", stream, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    # token -> username; per app instance so tests never share logins.
    app.state.sessions = {}
    return app
