"""The dashboard as a marketer uses it, in Debian's Chromium against uvicorn: headline figures
against the previous period, click-to-filter kept in the address bar, goals, a funnel built from
the site's own pages and events, the read-only shared link, and every panel at 320 to 1280 px.

Screenshots go to test-output/screenshots/dashboard-marketer-<lang>-<width>.png for a person to look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import TokenStore, share_link

from .. import analytics_data as data
from .conftest import SCREENSHOTS, LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def served(make_settings: Callable[..., Settings], store: Any) -> Iterator[tuple[str, TokenStore, dt.date]]:
    from consent_gateway.store import migrate

    settings = make_settings()
    migrate(store)
    base = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    data.insert(store, "events", data.build_rows(base))
    data.insert(store, "consent_receipts", data.build_receipts(base))
    server = LiveServer(create_analytics_app(settings, store=store)).start()
    try:
        yield server.url + "/", TokenStore(settings.tokens_path), base
    finally:
        server.stop()


def _page(new_context: Callable[..., Any], width: int = 1280) -> Any:
    page = new_context(viewport={"width": width, "height": 900}).new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    return page


def _load(page: Any, url: str, token: str | None = None) -> None:
    page.goto(url)
    if token is not None:
        page.locator("#token").fill(token)
        page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)


def _metric(page: Any, name: str) -> str:
    return str(page.locator(f"dd[data-metric='{name}']").inner_text())


def _days(base: dt.date, first: int, count: int) -> str:
    start = base + dt.timedelta(days=first)
    return f"from={start}&to={start + dt.timedelta(days=count - 1)}"


def test_click_to_filter_kept_in_the_address_bar(new_context: Callable[..., Any], served: Any) -> None:
    url, tokens, base = served
    token, _ = tokens.create("marketing")
    page = _page(new_context)
    _load(page, f"{url}?lang=en&{_days(base, 0, 3)}", token)
    assert _metric(page, "visitors").startswith("32")
    # Click a page in the pages panel: everything is filtered by it.
    page.locator("#panel-pages-body button.filter-link[data-value='/pricing']").click()
    page.wait_for_function("() => document.querySelector(\"dd[data-metric='visitors']\").textContent.startsWith('12')")
    page.wait_for_selector("body[data-loaded='1']")
    assert _metric(page, "pageviews") == "24"
    chip = page.locator("#filters button[data-filter='page']")
    assert chip.inner_text().replace("\n", " ").startswith("Page: /pricing")
    assert parse_qs(urlsplit(page.url).query)["page"] == ["/pricing"]
    # The filter is in the address bar: a reload (or a bookmark) shows the same view.
    page.reload()
    page.locator("#token").fill(token)
    page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("body[data-loaded='1']")
    assert _metric(page, "visitors").startswith("12")
    # Removed with the keyboard.
    page.locator("#filters button[data-filter='page']").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector(\"dd[data-metric='visitors']\").textContent.startsWith('32')")
    assert "page" not in parse_qs(urlsplit(page.url).query)
    assert page.locator("#filter-bar").is_hidden()
    # "(direct)", the empty referrer, is a filter too: the 14 consented visitors came without one.
    page.locator("#panel-sources-body button.filter-link[data-value='']").click()
    page.wait_for_function("() => document.querySelector(\"dd[data-metric='visitors']\").textContent.startsWith('14')")
    assert parse_qs(urlsplit(page.url).query)["referrer_host"] == ["(none)"]
    assert "(direct)" in page.locator("#filters").inner_text()
    assert page.errors == []


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_headline_against_the_previous_period(new_context: Callable[..., Any], served: Any, lang: str) -> None:
    url, tokens, base = served
    token, _ = tokens.create("marketing")
    page = _page(new_context)
    # Day 1 against day 0 (see tests/test_analytics_headline.py for the numbers).
    _load(page, f"{url}?lang={lang}&{_days(base, 1, 1)}", token)
    assert _metric(page, "visits") == "19"
    delta = page.locator("dd[data-change='visits']").inner_text()
    assert delta.startswith("▲ 5.6%")
    bounce = page.locator("dd[data-change='bounce_rate']")
    assert bounce.inner_text().startswith("▲ 3.5%p" if lang == "ko" else "▲ 3.5 pts")
    assert "bad" in (bounce.get_attribute("class") or "")  # more bounces is worse
    assert page.locator("dd[data-change='visit_duration']").inner_text().startswith("▼ 5%")
    assert _metric(page, "visit_duration") == ("57초" if lang == "ko" else "57s")
    assert _metric(page, "conversions").startswith("7")
    notes = page.locator("#headline-notes").inner_text()
    assert base.isoformat() in notes
    # The chart draws the previous period's page views behind this one's.
    assert page.locator("#chart path[data-series='previous']").count() == 1
    assert base.isoformat() in page.locator("#chart-legend").inner_text()
    # Without the comparison, no change is shown.
    page.locator("#compare").uncheck()
    page.locator("#controls button[type=submit]").click()
    page.wait_for_function("() => !document.querySelector('dd[data-change]')")
    page.wait_for_selector("body[data-loaded='1']")
    assert page.locator("#chart path[data-series='previous']").count() == 0
    assert parse_qs(urlsplit(page.url).query)["compare"] == ["off"]
    assert page.errors == []


def test_goals_and_a_funnel_from_the_sites_own_data(new_context: Callable[..., Any], served: Any) -> None:
    url, tokens, base = served
    token, _ = tokens.create("marketing")
    page = _page(new_context)
    _load(page, f"{url}?lang=ko&{_days(base, 0, 3)}", token)
    # Every event name is a goal until goals are chosen; "download" (one person) is not named.
    rows = page.locator("#goals-table tbody tr")
    assert rows.count() == 1
    assert rows.first.locator("td").all_inner_texts()[1:] == ["6", "12", "18.8%"]
    assert "download" not in page.locator("#panel-goals").inner_text()
    # Goals offered from the data: pages and events the site has.
    options = page.locator("#goal-add option").all_inner_texts()
    assert "페이지 /pricing" in options and "이벤트 signup" in options
    assert not any("/nothing" in o for o in options)
    page.select_option("#goal-add", "page:/pricing")
    assert page.locator("#goals").input_value() == "page:/pricing"
    page.locator("#goals-form button[type=submit]").click()
    page.wait_for_function(
        "() => (document.querySelector('#goals-table tbody tr td.label') || {}).textContent === '페이지 /pricing'"
    )
    page.wait_for_selector("body[data-loaded='1']")
    assert rows.first.locator("td").all_inner_texts()[1:] == ["12", "24", "37.5%"]
    assert _metric(page, "conversions").startswith("12")
    assert parse_qs(urlsplit(page.url).query)["goals"] == ["page:/pricing"]
    # The funnel's steps are offered from the data and can be added from the list.
    assert page.locator("#steps").input_value() == "page:/,page:/pricing,event:signup"
    page.locator("#steps").fill("page:/,page:/pricing")
    page.select_option("#step-add", "page:/signup")
    assert page.locator("#steps").input_value() == "page:/,page:/pricing,page:/signup"
    page.locator("#funnel-form button[type=submit]").click()
    last_step = "(document.querySelector('#funnel li:nth-child(3)') || {textContent: ''}).textContent"
    page.wait_for_function(f"() => {last_step}.includes('/signup')")
    assert page.locator("#funnel [data-step='2']").inner_text().startswith("12")
    assert page.locator("#funnel [data-step='3']").inner_text().startswith("6")
    # A goal is a filter too: its visitors are those who reached it.
    page.locator("#goals-table button.filter-link[data-value='/pricing']").click()
    page.wait_for_function("() => document.querySelector(\"dd[data-metric='visitors']\").textContent.startsWith('12')")
    assert parse_qs(urlsplit(page.url).query)["page"] == ["/pricing"]
    assert page.errors == []


def test_a_shared_link_shows_one_sites_dashboard_read_only(new_context: Callable[..., Any], served: Any) -> None:
    url, tokens, base = served
    token, record = tokens.create_share(data.SITE, expires_days=7)
    link = share_link(url, data.SITE, token)
    page = _page(new_context, 360)
    page.goto(link.replace("/?site=", f"/?lang=ko&{_days(base, 0, 3)}&site="))
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    # No token to type, nothing to store: the link is the key, and it reads this one site.
    assert page.locator("#token-field").is_hidden()
    assert page.locator("#shared-note").is_visible()
    assert page.locator("#site").get_attribute("readonly") is not None
    assert page.evaluate("sessionStorage.getItem('cg-analytics-token')") is None
    assert _metric(page, "visitors").startswith("32")
    assert page.locator("#realtime").is_visible()
    # The token stays in the fragment: the address the browser requests never carries it.
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.locator("#panel-pages-body button.filter-link[data-value='/pricing']").click()
    page.wait_for_function("() => document.querySelector(\"dd[data-metric='visitors']\").textContent.startsWith('12')")
    assert requested and not any(token in u for u in requested)
    assert urlsplit(page.url).fragment == f"share={token}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-shared-ko-360.png"), full_page=True)
    # Revoked: the link stops working on the next request.
    tokens.revoke(record.name)
    page.reload()
    page.wait_for_selector("#status.error")
    assert "공유 링크는 만료되었거나 취소되었습니다" in page.locator("#status").inner_text()
    assert page.errors == [] or all("401" in e for e in page.errors)


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("width", [320, 360, 1280])
def test_every_panel_fits_and_is_in_the_chosen_language(
    new_context: Callable[..., Any], served: Any, lang: str, width: int
) -> None:
    url, tokens, base = served
    token, _ = tokens.create("marketing")
    page = _page(new_context, width)
    _load(page, f"{url}?lang={lang}&{_days(base, 0, 3)}", token)
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    for panel in ("sources", "campaigns", "pages", "devices"):
        assert page.locator(f"#panel-{panel}-body tbody tr").count() >= 1, panel
    # The tabs work from the keyboard: arrow keys move between a panel's breakdowns.
    page.locator("#panel-pages-tab-page").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#panel-pages').dataset.dimension === 'entry_page'")
    assert page.evaluate("document.activeElement.id") == "panel-pages-tab-entry_page"
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#panel-pages').dataset.dimension === 'exit_page'")
    exits = page.locator("#panel-pages-body thead th").all_inner_texts()
    assert exits[2] == ("종료 방문" if lang == "ko" else "Exits")
    page.locator("#panel-devices-tab-device").click()
    tablet = "태블릿" if lang == "ko" else "Tablet"
    page.locator("#panel-devices-body td.label", has_text=tablet).wait_for()
    # Suppressed values are explained where they are left out.
    page.locator("#panel-pages-tab-page").click()
    page.wait_for_function("() => document.querySelector('#panel-pages').dataset.dimension === 'page'")
    hidden = "2개는 표시하지 않았습니다" if lang == "ko" else "2 values with fewer than 5 people are not shown"
    page.wait_for_function(f"() => document.querySelector('#panel-pages-notes').textContent.includes({hidden!r})")
    page.wait_for_selector("body[data-loaded='1']")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if width != 320:
        page.screenshot(path=str(SCREENSHOTS / f"dashboard-marketer-{lang}-{width}.png"), full_page=True)
    assert page.errors == []


@pytest.mark.parametrize("width", [360, 1280])
def test_axe_finds_no_violations_on_the_dashboard(
    new_context: Callable[..., Any], served: Any, axe_script: Any, width: int
) -> None:
    from .test_accessibility import audit

    url, tokens, base = served
    token, _ = tokens.create("marketing")
    # The page's CSP refuses inline scripts, as it should; the audit's own script is let in.
    page = new_context(viewport={"width": width, "height": 900}, bypass_csp=True).new_page()
    _load(page, f"{url}?lang=ko&{_days(base, 0, 3)}&page=/pricing", token)
    assert audit(page, axe_script) == []
