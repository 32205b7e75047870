"""The dashboard at 360 and 1280 px in Korean and English: readable chart, unbroken Korean headers,
named empty values, no English in the Korean page, a funnel offered from the site's own data.

Screenshots go to test-output/screenshots/dashboard-<lang>-<width>.png for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import TokenStore
from consent_gateway.store import Store, migrate

from .. import analytics_data as data
from .conftest import SCREENSHOTS, LiveServer

pytestmark = pytest.mark.browser

# Latin words allowed in the Korean page: the language switch, command and parameter names, and the
# data set's own values (paths, browsers, campaigns) which are the site's, not the interface's.
ALLOWED_LATIN = {
    "English",
    "CSV",
    "consent",
    "gateway",
    "keys",
    "create",
    "NAME",
    "utm_source",
    "utm_medium",
    "utm_content",
    "utm_term",
    "page",
    "event",
}


@pytest.fixture
def dashboard(make_settings: Callable[..., Settings], store: Store) -> Iterator[tuple[str, str, dt.date]]:
    settings = make_settings()
    migrate(store)
    base = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    data.insert(store, "events", data.build_rows(base))
    data.insert(store, "consent_receipts", data.build_receipts(base))
    token, _ = TokenStore(settings.tokens_path).create("layout-test")
    server = LiveServer(create_analytics_app(settings, store=store)).start()
    try:
        yield server.url + "/", token, base
    finally:
        server.stop()


def _open(new_context: Callable[..., Any], url: str, token: str, width: int, query: str) -> Any:
    context = new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + query)
    page.locator("#token").fill(token)
    page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    page.errors = errors
    return page


def _chart_facts(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => {
        const labels = [...document.querySelectorAll('#chart text.xlabel')].map(n => n.getBoundingClientRect());
        const overlaps = labels.slice(1).filter((r, i) => r.left < labels[i].right + 2).length;
        const ticks = [...document.querySelectorAll('#chart text[data-tick]')].map(n => Number(n.dataset.tick));
        const sizes = [...document.querySelectorAll('#chart text')].map(n => n.getBoundingClientRect().height);
        return {count: labels.length, overlaps, ticks, smallest: Math.min(...sizes)};
    }"""
    )


def _nice(step: float) -> bool:
    while step >= 10:
        step /= 10
    return step in (1, 2, 5)


@pytest.mark.parametrize("width", [360, 1280])
def test_hourly_chart_is_readable(new_context: Callable[..., Any], dashboard: Any, width: int) -> None:
    url, token, base = dashboard
    end = base + dt.timedelta(days=2)
    page = _open(new_context, url, token, width, f"?lang=ko&from={base}&to={end}")
    page.select_option("#interval", "hour")
    page.locator("#controls button[type=submit]").click()
    page.wait_for_function("() => document.querySelectorAll('#series-table tbody tr').length > 24")
    facts = _chart_facts(page)
    assert facts["count"] >= 2 and facts["overlaps"] == 0, facts
    # Text at its real size: 12 px in CSS, never scaled down to a few pixels on a phone.
    assert facts["smallest"] >= 10, facts
    ticks = facts["ticks"]
    assert ticks[0] == 0 and len(ticks) >= 3 and all(_nice(b - a) for a, b in itertools.pairwise(ticks))
    assert len({b - a for a, b in itertools.pairwise(ticks)}) == 1
    # Three whole past days: 72 hourly rows in the table under the chart.
    assert page.locator("#series-table tbody tr").count() == 72
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#chart").screenshot(path=str(SCREENSHOTS / f"dashboard-hourly-ko-{width}.png"))
    assert page.errors == []


def test_hours_still_to_come_are_not_drawn(new_context: Callable[..., Any], dashboard: Any) -> None:
    url, token, _ = dashboard
    page = _open(new_context, url, token, 1280, "?lang=en")
    page.select_option("#preset", "7")
    page.select_option("#interval", "hour")
    page.locator("#controls button[type=submit]").click()
    page.wait_for_function(
        "() => (document.querySelector('#series-table tbody th') || {textContent: ''}).textContent.includes('T')"
    )
    last = page.locator("#series-table tbody tr").last.locator("th").text_content() or ""
    now = dt.datetime.now(dt.UTC)
    shown = dt.datetime.strptime(last[:13], "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)
    assert shown <= now
    assert page.locator("#series-table tbody tr").count() <= 7 * 24


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("width", [360, 1280])
def test_layout_in_both_languages(new_context: Callable[..., Any], dashboard: Any, lang: str, width: int) -> None:
    url, token, base = dashboard
    end = base + dt.timedelta(days=2)
    page = _open(new_context, url, token, width, f"?lang={lang}&from={base}&to={end}")
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    # The funnel is offered from the data: its two most visited pages and its most sent event.
    assert page.locator("#steps").input_value() == "page:/,page:/pricing,event:signup"
    assert page.locator("#funnel [data-step='3']").inner_text().startswith("6")
    # Empty referrers are named, in the page's language (the sources panel opens on referrers).
    direct = "(직접 유입)" if lang == "ko" else "(direct)"
    page.locator("#panel-sources-body td.label", has_text=direct).wait_for()
    # Headers are never broken inside a word.
    broken = page.evaluate(
        """() => [...document.querySelectorAll('.panel-body thead th, #series-table thead th, #goals-table thead th')]
            .filter(th => getComputedStyle(th).wordBreak !== 'keep-all' || (!th.textContent.includes(' ')
                && (() => { const r = document.createRange(); r.selectNodeContents(th);
                            return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1; })()))
            .map(th => th.textContent)"""
    )
    assert broken == []
    # The page breakdown counts events sent from each page.
    page.locator("#panel-pages-body td.label", has_text="/signup").wait_for()
    signup = page.locator("#panel-pages-body tbody tr", has_text="/signup").locator("td").all_inner_texts()
    assert signup[-1] == "12"
    # Campaigns: the consent note is in the page's language too.
    page.locator("#panel-campaigns-body td.label", has_text="spring").wait_for()
    if lang == "ko":
        text = page.evaluate("document.body.innerText")
        words = set(re.findall(r"[A-Za-z][A-Za-z_]{3,}", text)) - ALLOWED_LATIN
        values = {"pricing", "signup", "spring", "blog", "secret", "Chrome", "Firefox", "Safari", "search", "example"}
        assert words - values == set(), words - values
        assert "마케팅에 동의한" in page.locator("#panel-campaigns-notes").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"dashboard-{lang}-{width}.png"), full_page=True)
    assert page.errors == []


def test_errors_are_in_the_page_language(new_context: Callable[..., Any], dashboard: Any) -> None:
    url, _, _ = dashboard
    context = new_context(viewport={"width": 360, "height": 800})
    page = context.new_page()
    page.goto(url + "?lang=ko")
    page.locator("#token").fill("cga_not-a-real-token")
    page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("#status.error")
    message = page.locator("#status").inner_text()
    assert "유효한 API 토큰" in message and "valid" not in message
