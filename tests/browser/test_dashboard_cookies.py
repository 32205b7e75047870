"""The dashboard's cookie panel in Chromium at 320, 360 and 1280 px, in Korean and English, from the keyboard.

The inventory is written through its own flush path (tests/test_analytics_cookies.py). Screenshots go to
test-output/screenshots/dashboard-cookies-<lang>-<width>.png for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import TokenStore, share_link
from consent_gateway.inventory import Classifier, CookieInventory, flush_inventory, installed_catalogue
from consent_gateway.store import Store, migrate

from .. import analytics_data as data
from ..test_analytics_cookies import fill_inventory
from .conftest import SCREENSHOTS, LiveServer

pytestmark = pytest.mark.browser

# Latin words the Korean panel may show: the command to run, cookie attributes, and the site's own
# cookie names and paths (data, not interface text).
ALLOWED_LATIN = {
    "consent",
    "gateway",
    "cookies",
    "unclassified",
    "format",
    "toml",
    "HttpOnly",
    "Secure",
    "SameSite",
    "None",
    "palette_session",
    "mystery_pref",
    "tag_xid",
    "ui_lang",
    "news",
    "shop",
    "login",
}


@pytest.fixture
def served(make_settings: Callable[..., Settings], store: Store) -> Iterator[tuple[str, TokenStore]]:
    settings = make_settings()
    migrate(store)
    base = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    data.insert(store, "events", data.build_rows(base))
    fill_inventory(store, settings)
    server = LiveServer(create_analytics_app(settings, store=store)).start()
    try:
        yield server.url + "/", TokenStore(settings.tokens_path)
    finally:
        server.stop()


def _open(new_context: Callable[..., Any], url: str, width: int) -> Any:
    page = new_context(viewport={"width": width, "height": 900}).new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    return page


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("width", [320, 360, 1280])
def test_the_cookie_panel(new_context: Callable[..., Any], served: Any, lang: str, width: int) -> None:
    url, tokens = served
    token, _ = tokens.create("site-team")
    page = _open(new_context, f"{url}?lang={lang}&period=30", width)
    page.locator("#token").fill(token)
    page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    rows = page.locator("#cookies-table tbody tr")
    assert rows.count() == 6
    # Unclassified names first, marked by a word as well as a colour, and counted.
    unclassified = page.locator("#cookies-table tr.unclassified")
    assert unclassified.count() == 3
    badge = "미분류" if lang == "ko" else "unclassified"
    assert unclassified.locator(".badge").all_inner_texts() == [badge] * 3
    assert page.locator("#cookies-table tr.unclassified th .cookie-name").all_inner_texts() == [
        "=cmd",
        "mystery_pref",
        "tag_xid",
    ]
    count = page.locator("#cookies-count").inner_text()
    assert ("6개 가운데 미분류 3개" in count) if lang == "ko" else ("3 of the 6 cookies" in count), count
    ga = page.locator("#cookies-table tr[data-cookie='_ga']")
    cells = ga.locator("td").all_inner_texts()
    category, by, set_count, requests, blocked, before, lifetime = cells[:7]
    assert category.split("\n")[0] == ("통계" if lang == "ko" else "Analytics")
    assert (set_count, requests, blocked, before) == ("3", "1", "1", "2")
    assert lifetime == ("730일" if lang == "ko" else "730 days")
    assert by == ("서버" if lang == "ko" else "server")
    script = page.locator("#cookies-table tr[data-cookie='tag_xid'] td").all_inner_texts()[1]
    assert script == ("스크립트 (요청에서만)" if lang == "ko" else "script (requests only)")
    # The "before consent" column is explained, and tied to its explanation for screen readers.
    header = page.locator("#cookies-table th[aria-describedby='cookies-before-note']")
    assert header.inner_text() == ("동의 전" if lang == "ko" else "Before consent")
    note = page.locator("#cookies-before-note").inner_text()
    assert ("동의하지 않았는데" in note) if lang == "ko" else ("had not granted its category" in note)
    hint = page.locator("#cookies-hint")
    assert hint.is_visible()
    assert hint.locator("code").inner_text() == "consent-gateway cookies --unclassified --format toml"
    # Usable on a phone: the page itself never scrolls sideways; the table scrolls in its box.
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    if lang == "ko":
        text = page.locator("#panel-cookies").inner_text()
        words = set(re.findall(r"[A-Za-z][A-Za-z_]{3,}", text)) - ALLOWED_LATIN
        assert words == set(), words
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#panel-cookies").screenshot(path=str(SCREENSHOTS / f"dashboard-cookies-{lang}-{width}.png"))
    assert page.errors == []


def test_the_panel_from_the_keyboard(new_context: Callable[..., Any], served: Any) -> None:
    url, tokens = served
    token, _ = tokens.create("site-team")
    page = _open(new_context, f"{url}?lang=en&period=30", 360)
    page.locator("#token").fill(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    # Tab reaches the switch, Space turns it on: only the unclassified names are left.
    page.locator("#cookies-csv").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "cookies-only"
    page.keyboard.press("Space")
    page.wait_for_function("() => document.querySelectorAll('#cookies-table tbody tr').length === 3")
    assert page.locator("#cookies-table tbody tr:not(.unclassified)").count() == 0
    assert page.locator("#cookies-count").inner_text().startswith("3 unclassified cookies")
    # The next Tab stop is the wide table's box, which the arrow keys scroll sideways.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('role')") == "region"
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.activeElement.scrollLeft > 0")
    # The CSV button downloads what the panel shows.
    page.locator("#cookies-csv").focus()
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("name,category,source,set_by")
    assert len(text.strip().splitlines()) == 4 and "'=cmd" in text
    assert page.errors == []


def test_a_shared_link_has_no_cookie_panel(new_context: Callable[..., Any], served: Any) -> None:
    url, tokens = served
    token, _ = tokens.create_share("test-site", expires_days=7)
    requested: list[str] = []
    page = _open(new_context, "about:blank", 360)
    page.on("request", lambda r: requested.append(r.url))
    page.goto(share_link(url, "test-site", token).replace("/?site=", "/?lang=ko&site="))
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    assert page.locator("#panel-cookies").is_hidden()
    assert not any("/api/v1/cookies" in u for u in requested)
    assert page.errors == []


def test_a_name_anyone_sent_is_shown_as_text(
    new_context: Callable[..., Any], served: Any, make_settings: Callable[..., Settings], store: Store
) -> None:
    url, tokens = served
    settings = make_settings()
    inventory = CookieInventory(Classifier.from_settings(settings, installed_catalogue()))
    inventory.observe_request_cookies(['<img src=x onerror="document.title=1">'], path="/", granted=[])
    flush_inventory(store, inventory, settings.site_id)
    token, _ = tokens.create("site-team")
    page = _open(new_context, f"{url}?lang=en&period=30", 1280)
    page.locator("#token").fill(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    assert page.locator("#cookies-table tbody tr").count() == 7
    names = page.locator("#cookies-table .cookie-name").all_inner_texts()
    assert '<img src=x onerror="document.title=1">' in names
    assert page.locator("#panel-cookies img").count() == 0
    assert page.title() != "1"
    assert page.errors == []
