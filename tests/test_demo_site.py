"""Tests of the bare demo site ("팔레트"), without the consent gateway in front."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from http.cookies import SimpleCookie

import httpx
import pytest
from starlette.testclient import TestClient

from consent_gateway.demo import create_demo_app
from consent_gateway.demo import site as demo_site

HTML_PAGES = ["/", "/students", "/portfolio", "/attendance", "/login", "/privacy"]

GATED_ANALYTICS = '<script type="text/plain" data-consent="analytics" data-src="/static/analytics-demo.js"></script>'
GATED_MARKETING = '<script type="text/plain" data-consent="marketing" data-src="/static/marketing-demo.js"></script>'

TAG_RE = re.compile(r"<[a-zA-Z][^>]*>")
SCRIPT_RE = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)
ATTR_NAME_RE = re.compile(r"""\s([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=""")


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A fresh client (and cookie jar) per test, so first-visit behaviour is real."""
    with TestClient(create_demo_app()) as test_client:
        yield test_client


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    """Each Set-Cookie header parsed on its own, keyed by cookie name."""
    parsed: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            parsed[name] = cookie
    return parsed


# --------------------------------------------------------------------------- pages


@pytest.mark.parametrize("path", HTML_PAGES)
def test_page_has_document_shell_and_gated_scripts(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    body = response.text
    assert body.startswith("<!doctype html>")
    assert '<html lang="ko">' in body
    assert '<meta charset="utf-8">' in body
    assert 'name="viewport"' in body
    assert re.search(r"<title>[^<]+</title>", body)
    assert '<link rel="stylesheet" href="/static/site.css">' in body
    assert '<script src="/static/app.js" defer></script>' in body
    # The gateway injects before these: each must appear exactly once.
    assert body.count("</head>") == 1
    assert body.count("</body>") == 1
    assert body.count(GATED_ANALYTICS) == 1
    assert body.count(GATED_MARKETING) == 1
    assert body.index(GATED_MARKETING) < body.index("</body>")
    # Landmarks and a single h1.
    assert "<header" in body
    assert re.search(r'<nav [^>]*aria-label="[^"]+"', body)
    assert '<main id="main"' in body
    assert "<footer" in body
    assert len(re.findall(r"<h1[\s>]", body)) == 1
    assert '<a href="/privacy">' in body


@pytest.mark.parametrize("path", [*HTML_PAGES, "/does-not-exist"])
def test_pages_are_strict_csp_clean(client: TestClient, path: str) -> None:
    """No inline script bodies, inline styles, <style> blocks or on* handlers."""
    body = client.get(path).text
    scripts = SCRIPT_RE.findall(body)
    assert len(scripts) == 3  # app.js + the two gated tags
    for attrs, content in scripts:
        assert content.strip() == "", f"inline script body in {path}: {content[:60]!r}"
        assert "src=" in attrs
    assert not re.search(r"<style\b", body, re.I)
    assert "javascript:" not in body.lower()
    for tag in TAG_RE.findall(body):
        names = {name.lower() for name in ATTR_NAME_RE.findall(tag)}
        assert "style" not in names, f"style attribute in {path}: {tag}"
        handlers = {name for name in names if name.startswith("on")}
        assert not handlers, f"event handler attribute in {path}: {tag}"


def test_form_inputs_have_labels_and_tables_have_scoped_headers(client: TestClient) -> None:
    login = client.get("/login").text
    for input_id in ("username", "password"):
        assert f'<label for="{input_id}">' in login
        assert f'id="{input_id}"' in login
    for path in ("/students", "/attendance", "/privacy"):
        body = client.get(path).text
        headers = re.findall(r"<th\b[^>]*>", body)
        assert headers
        assert all("scope=" in th for th in headers), path


def test_students_page_lists_eight_fictional_students(client: TestClient) -> None:
    body = client.get("/students").text
    tbody = body.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert tbody.count("<tr>") == 8
    for student in demo_site.STUDENTS:
        assert student.name in tbody


def test_portfolio_uses_inline_svg_with_accessible_names(client: TestClient) -> None:
    body = client.get("/portfolio").text
    svgs = re.findall(r"<svg\b[^>]*>", body)
    assert len(svgs) == len(demo_site.ARTWORKS) >= 6
    assert all('role="img"' in svg and "aria-labelledby=" in svg for svg in svgs)
    assert '<img src="http' not in body  # no external images


def test_attendance_page_and_api_cover_this_week(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_site, "_today", lambda: date(2025, 3, 12))  # a Wednesday
    page = client.get("/attendance").text
    assert '<th scope="col" aria-current="date" class="is-today">' in page
    assert 'datetime="2025-03-12"' in page

    response = client.get("/api/attendance")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["today"] == "2025-03-12"
    assert data["week"][0] == "2025-03-10"  # Monday
    assert len(data["week"]) == 6
    assert len(data["students"]) == 8
    statuses = {s for student in data["students"] for s in student["records"].values()}
    assert statuses <= {"present", "late", "absent", "scheduled", "paused", "none"}
    # Nothing after "today" has happened yet.
    for student in data["students"]:
        assert student["records"]["2025-03-14"] in {"scheduled", "paused", "none"}
    # JSON responses are not pages: no tracking cookies minted there.
    assert response.headers.get_list("set-cookie") == []


def test_the_home_page_on_a_sunday_says_there_are_no_classes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sunday in Seoul lies outside the Monday-to-Saturday week: the page still answers."""
    monkeypatch.setattr(demo_site, "_today", lambda: date(2026, 12, 6))  # a Sunday
    korean = client.get("/")
    assert korean.status_code == 200
    assert "오늘은 수업이 없습니다" in korean.text
    client.cookies.set("ui_lang", "en")
    english = client.get("/")
    assert english.status_code == 200
    assert "No classes today" in english.text


def test_unknown_path_is_a_404_html_page(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "페이지를 찾을 수 없습니다" in response.text
    assert response.text.count("</body>") == 1


def test_wrong_method_keeps_allow_header(client: TestClient) -> None:
    response = client.get("/logout")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_static_files_are_served(client: TestClient) -> None:
    for name, kind in (
        ("site.css", "text/css"),
        ("app.js", "javascript"),
        ("analytics-demo.js", "javascript"),
        ("marketing-demo.js", "javascript"),
        ("logo.svg", "image/svg+xml"),
    ):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], name
    analytics = client.get("/static/analytics-demo.js").text
    assert "window.demoAnalyticsLoaded = true" in analytics
    assert '"_pa_js=1; path=/; max-age=31536000; samesite=lax"' in analytics
    assert '"data-analytics", "on"' in analytics
    marketing = client.get("/static/marketing-demo.js").text
    assert "window.demoMarketingLoaded = true" in marketing
    assert "_mk_js=1" in marketing
    assert '"data-marketing", "on"' in marketing
    css = client.get("/static/site.css").text
    assert "prefers-color-scheme: dark" in css
    assert "Noto Sans KR" in css


# --------------------------------------------------------------------------- tracking cookies


def test_first_visit_sets_analytics_and_marketing_cookies(client: TestClient) -> None:
    response = client.get("/")
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 2  # two separate Set-Cookie headers on one response
    cookies = set_cookies(response)
    assert set(cookies) == {"_pa_id", "_mk_px"}

    pa = cookies["_pa_id"]["_pa_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", pa.value)
    assert pa["httponly"] is True
    assert pa["path"] == "/"
    assert int(pa["max-age"]) == 365 * 24 * 3600

    mk = cookies["_mk_px"]["_mk_px"]
    assert re.fullmatch(r"[0-9a-f]{24}", mk.value)
    assert mk["path"] == "/"
    assert int(mk["max-age"]) == 90 * 24 * 3600


def test_returning_visitor_is_not_given_new_ids(client: TestClient) -> None:
    first = client.get("/")
    ids = {name: c[name].value for name, c in set_cookies(first).items()}
    # The client's jar now sends both cookies back.
    assert client.cookies.get("_pa_id") == ids["_pa_id"]
    second = client.get("/students")
    assert second.headers.get_list("set-cookie") == []


def test_each_tracking_cookie_is_minted_independently(client: TestClient) -> None:
    client.cookies.set("_pa_id", "existing")
    response = client.get("/portfolio")
    assert set(set_cookies(response)) == {"_mk_px"}


def test_fresh_visitors_get_distinct_ids() -> None:
    app = create_demo_app()
    with TestClient(app) as a, TestClient(app) as b:
        first = set_cookies(a.get("/"))["_pa_id"]["_pa_id"].value
        second = set_cookies(b.get("/"))["_pa_id"]["_pa_id"].value
    assert first != second


# --------------------------------------------------------------------------- login


def test_login_sets_httponly_session_and_redirects(client: TestClient) -> None:
    client.get("/")  # settle tracking cookies first so only the session is set below
    response = client.post("/login", data={"username": "teacher", "password": "x"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/students"
    cookies = set_cookies(response)
    assert set(cookies) == {"palette_session"}
    session = cookies["palette_session"]["palette_session"]
    assert len(session.value) >= 32
    assert session["httponly"] is True
    assert session["samesite"].lower() == "lax"
    assert session["path"] == "/"

    page = client.get("/students").text
    assert "teacher님, 환영합니다." in page
    assert 'action="/logout"' in page


def test_login_escapes_the_username(client: TestClient) -> None:
    client.post("/login", data={"username": "<script>x</script>"})
    page = client.get("/students").text
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x</script>" not in page


def test_empty_username_is_rejected(client: TestClient) -> None:
    response = client.post("/login", data={"username": "  ", "password": "pw"})
    assert response.status_code == 400
    assert 'role="alert"' in response.text
    assert "palette_session" not in set_cookies(response)


def test_session_tokens_are_random(client: TestClient) -> None:
    tokens = set()
    for _ in range(3):
        response = client.post("/login", data={"username": "a"}, follow_redirects=False)
        tokens.add(set_cookies(response)["palette_session"]["palette_session"].value)
    assert len(tokens) == 3


def test_logout_clears_session(client: TestClient) -> None:
    client.post("/login", data={"username": "teacher"})
    response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    session = set_cookies(response)["palette_session"]["palette_session"]
    assert session["max-age"] == "0"
    assert "palette_session" not in client.cookies
    assert "환영합니다" not in client.get("/students").text


def test_forged_session_cookie_is_not_logged_in(client: TestClient) -> None:
    client.cookies.set("palette_session", "forged")
    page = client.get("/students").text
    assert "환영합니다" not in page
    assert 'href="/login"' in page


# --------------------------------------------------------------------------- language


def test_language_switch_sets_cookie_and_redirects_to_referer(client: TestClient) -> None:
    response = client.post(
        "/settings/language",
        data={"lang": "en"},
        headers={"referer": "http://testserver/portfolio?x=1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/portfolio"
    ui_lang = set_cookies(response)["ui_lang"]["ui_lang"]
    assert ui_lang.value == "en"
    assert ui_lang["path"] == "/"
    assert int(ui_lang["max-age"]) == 365 * 24 * 3600

    page = client.get("/portfolio").text
    assert '<html lang="en">' in page
    assert "<h1>Portfolio</h1>" in page

    client.post("/settings/language", data={"lang": "ko"})
    assert '<html lang="ko">' in client.get("/").text


@pytest.mark.parametrize("path", HTML_PAGES)
def test_english_pages(client: TestClient, path: str) -> None:
    client.cookies.set("ui_lang", "en")
    body = client.get(path).text
    assert '<html lang="en">' in body
    assert "Privacy policy" in body
    assert body.count(GATED_ANALYTICS) == 1


def test_language_switch_without_referer_goes_home(client: TestClient) -> None:
    response = client.post("/settings/language", data={"lang": "ko"}, follow_redirects=False)
    assert response.headers["location"] == "/"


@pytest.mark.parametrize("referer", ["https://evil.example//evil.example/x", "not a url", "http://x/\\evil"])
def test_language_switch_never_redirects_off_site(client: TestClient, referer: str) -> None:
    response = client.post(
        "/settings/language",
        data={"lang": "en"},
        headers={"referer": referer},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_unknown_language_is_rejected(client: TestClient) -> None:
    response = client.post("/settings/language", data={"lang": "fr"}, follow_redirects=False)
    assert response.status_code == 400
    assert "ui_lang" not in set_cookies(response)


# --------------------------------------------------------------------------- streaming


def test_stream_sends_three_server_sent_events(client: TestClient) -> None:
    with client.stream("GET", "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        chunks = list(response.iter_text())
    text = "".join(chunks)
    events = [e for e in text.split("\n\n") if e]
    assert events == [f'data: {{"seq": {n}, "of": 3}}' for n in (1, 2, 3)]
    assert len(chunks) >= 3  # delivered as separate chunks, not one buffered body
