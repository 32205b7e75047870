"""The campaigns panel on traffic that went through the real gateway: visitors landing on campaign
links and choosing on that first page (accept all, marketing refused, reject all, no choice).

The panel must show what the API answers (tests/test_visits.py checks those numbers exactly): the
campaign and the ad clicks of the 4 visitors who granted marketing, with their whole visits, and
nothing for those who refused it. Screenshots of the panel go to
test-output/screenshots/dashboard-campaigns-<lang>-<width>.png for a person to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings, create_analytics_app
from consent_gateway.analytics import TokenStore

from ..gateway_support import flush
from ..test_visits import PROXY, _browse, _site, _traffic
from .conftest import SCREENSHOTS, LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def served(make_settings: Callable[..., Settings], store: Any) -> Iterator[tuple[str, str]]:
    settings = make_settings(k_anonymity=2, trusted_proxies=("127.0.0.1/32",))
    gateway = ConsentGateway(_site(), settings)
    with TestClient(gateway, client=PROXY) as client:
        for person in _traffic():
            _browse(client, person)
        flush(client, gateway)
    token, _ = TokenStore(settings.tokens_path).create("marketing")
    server = LiveServer(create_analytics_app(settings, store=store)).start()
    try:
        yield server.url + "/", token
    finally:
        server.stop()


def _rows(page: Any) -> dict[str, list[str]]:
    rows = {}
    for row in page.locator("#panel-campaigns-body tbody tr").all():
        cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize(("lang", "width"), [("ko", 1280), ("en", 1280), ("ko", 360), ("en", 360)])
def test_campaign_panel_credits_the_landing_campaign_to_whole_visits(
    new_context: Callable[..., Any], served: tuple[str, str], lang: str, width: int
) -> None:
    url, token = served
    page = new_context(viewport={"width": width, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}?lang={lang}")
    page.locator("#token").fill(token)
    page.locator("#controls button[type=submit]").click()
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    # 11 people came, in 11 visits: the landing hit before the choice and the pages after it are one.
    assert page.locator("dd[data-metric='visitors']").inner_text().startswith("11")

    page.locator("#panel-campaigns-body td.label", has_text="spring").wait_for()
    campaigns = _rows(page)
    assert list(campaigns) == ["spring"]
    # Visitors first, then page views: 4 people who granted marketing, 12 page views in their visits.
    assert campaigns["spring"][:2] == ["4", "12"]
    page.locator("#panel-campaigns").screenshot(
        path=str(_path(f"dashboard-campaigns-{lang}-{width}")), animations="disabled"
    )

    page.locator("#panel-campaigns-tab-click_attribution").click()
    page.wait_for_function("() => document.querySelector('#panel-campaigns').dataset.dimension === 'click_attribution'")
    page.wait_for_selector("body[data-loaded='1']")
    clicks = _rows(page)
    assert len(clicks) == 1
    assert next(iter(clicks.values()))[:2] == ["4", "12"]
    page.locator("#panel-campaigns").screenshot(
        path=str(_path(f"dashboard-campaigns-clicks-{lang}-{width}")), animations="disabled"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    assert errors == []


def _path(name: str) -> Any:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
