"""The dashboard in Debian's Chromium against a real uvicorn serving the analytics app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import AnalyticsMount, TokenStore
from consent_gateway.store import Store, migrate

from . import analytics_data as data
from .support import ThreadServer

OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def served(make_settings: Callable[..., Settings], store: Store) -> Iterator[tuple[str, str, dt.date]]:
    """The analytics app mounted at /_analytics (as the demo does) on a real socket, with the data set loaded."""
    settings = make_settings()
    migrate(store)
    base = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    data.insert(store, "events", data.build_rows(base))
    data.insert(store, "consent_receipts", data.build_receipts(base))
    token, _ = TokenStore(settings.tokens_path).create("dashboard-test")

    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    app = AnalyticsMount(not_found, create_analytics_app(settings, store=store), "/_analytics")
    with ThreadServer(app, lifespan="off") as server:
        yield f"{server.url}/_analytics/", token, base


@pytest.mark.browser
def test_dashboard_renders_the_api_numbers(served: tuple[str, str, dt.date], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, token, base = served
    end = base + dt.timedelta(days=2)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1800}, accept_downloads=True)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}?from={base.isoformat()}&to={end.isoformat()}")
        assert page.locator("html").get_attribute("lang") == "ko"
        assert page.locator("h1").inner_text() == "마케팅 분석"
        page.get_by_label("API 토큰").fill(token)
        page.get_by_role("button", name="조회").first.click()
        page.wait_for_selector("body[data-loaded='1']", timeout=30_000)

        # Headline numbers are the API's (see test_analytics_api for how they are known).
        assert page.locator("dd[data-metric='visitors']").inner_text().startswith("32")
        assert "추정" in page.locator("dd[data-metric='visitors']").inner_text()
        assert page.locator("dd[data-metric='pageviews']").inner_text() == "83"
        assert page.locator("dd[data-metric='visits']").inner_text() == "45"
        assert page.locator("dd[data-metric='bounce_rate']").inner_text() == "42.2%"
        # The chart: one line per series, drawn from the daily series.
        assert page.locator("#chart svg path[data-series='pageviews']").count() == 1
        assert "M" in (page.locator("#chart svg path[data-series='pageviews']").get_attribute("d") or "")
        # Breakdown by page: /secret (2 people) and /blog (1) hold 3 people together, under k, so
        # they are neither listed nor folded into an "other" row.
        rows = page.locator("#panel-pages-body tbody tr")
        assert rows.count() == 3
        assert page.locator("#panel-pages-body tbody tr.suppressed").count() == 0
        assert "/secret" not in page.locator("#panel-pages-body").inner_text()
        # Funnel and consent rates.
        assert page.locator("#funnel [data-step='1']").inner_text().startswith("32")
        assert page.locator("#funnel [data-step='3']").inner_text().startswith("6")
        # Day 1's 3 choices are suppressed, so the range total (13 - 10 = 3) is withheld; day 0: 8 of 10.
        consent = page.locator("#consent-total").inner_text()
        assert "비공개" in consent and "13" not in consent
        assert "80%" in page.locator("#consent-days").text_content()

        with page.expect_download() as download_info:
            page.locator("#panel-pages button.csv").click()
        csv_text = Path(download_info.value.path()).read_text("utf-8")
        assert csv_text.splitlines()[0] == "value,visitors,pageviews,events"
        assert "/pricing,12,24,2" in csv_text

        page.get_by_role("button", name="English").click()
        page.wait_for_function("document.documentElement.lang === 'en'")
        assert page.locator("h1").inner_text() == "Marketing analytics"
        page.wait_for_selector("#panel-pages-body th:has-text('Visitors')")

        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "analytics-dashboard.png"), full_page=True)
        page.set_viewport_size({"width": 380, "height": 900})
        page.screenshot(path=str(OUTPUT / "analytics-dashboard-narrow.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 380 + 1
        browser.close()
    assert errors == []


@pytest.mark.browser
def test_dashboard_without_a_token_asks_for_one(served: tuple[str, str, dt.date]) -> None:
    from playwright.sync_api import sync_playwright

    url, _, _ = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url + "?lang=en")
        page.wait_for_function("document.documentElement.lang === 'en'")
        page.get_by_label("API token").fill("cga_not-a-real-token")
        page.get_by_role("button", name="Show").first.click()
        page.wait_for_selector("#status.error")
        assert "valid API token" in page.locator("#status").inner_text()
        assert page.locator("dd[data-metric='visitors']").count() == 0
        browser.close()
