"""The cookie declaration and the my-data page in Chromium, served behind the gateway by uvicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings
from consent_gateway.declaration import CookieDeclarationEndpoint
from consent_gateway.inventory import (
    Classifier,
    CookieInventory,
    create_inventory_table,
    flush_inventory,
    read_inventory,
)
from consent_gateway.settings import CookieDescription
from consent_gateway.store import Store
from consent_gateway.store.schema import migrate

from ..test_inventory import catalogue
from .conftest import LiveServer, screenshot

# The gateway answers everything under its prefix itself; the app serves the page one level up.
PAGE_PATH = "/cookie-declaration"


@pytest.fixture
def declaration_site(make_settings: Callable[..., Settings], store: Store) -> Iterator[LiveServer]:
    settings = make_settings(
        cookie_descriptions=(
            (
                "palette_session",
                CookieDescription(
                    provider="Palette", purpose_ko="로그인 상태를 유지합니다.", purpose_en="Keeps you signed in."
                ),
            ),
        )
    )
    migrate(store)
    create_inventory_table(store)
    classifier = Classifier.from_settings(settings, catalogue)
    inventory = CookieInventory(classifier)
    inventory.observe_set_cookie("palette_session=v; HttpOnly", path="/", granted=True, blocked=False)
    inventory.observe_set_cookie("_mk_pixel=v; Max-Age=7776000", path="/", granted=False, blocked=True)
    inventory.observe_request_cookies(["_ga"], path="/", granted=["necessary"])
    flush_inventory(store, inventory, settings.site_id)
    endpoint = CookieDeclarationEndpoint(settings, classifier, lambda: read_inventory(store, settings.site_id))

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse("<!doctype html><html><head><title>home</title></head><body>home</body></html>")

    app = Starlette(routes=[Route("/", home), Route(PAGE_PATH, endpoint.handle)])
    server = LiveServer(ConsentGateway(app, settings)).start()
    yield server
    server.stop()


def _rows(page: Any) -> dict[str, list[str]]:
    return {
        row[0]: row
        for row in page.eval_on_selector_all(
            "table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
    }


def test_declaration_in_korean_and_english(declaration_site: LiveServer, new_context: Callable[..., Any]) -> None:
    base = f"http://127.0.0.1:{declaration_site.port}"
    page = new_context(locale="ko-KR").new_page()
    page.goto(f"{base}{PAGE_PATH}")
    assert page.locator("h1").inner_text() == "쿠키 목록"
    rows = _rows(page)
    assert rows["palette_session"][1:3] == ["Palette", "로그인 상태를 유지합니다."]
    assert rows["_ga"][1] == "Google Analytics" and rows["_ga"][4] == "제3자"
    assert rows["_mk_pixel"][3] == "3개월"
    # The stylesheet the page links is the gateway's own, and it applied.
    assert page.evaluate("getComputedStyle(document.body).fontFamily") != "Times New Roman"
    screenshot(page, "cookie-declaration-ko")
    # The page links its other language at the gateway's route (the test serves it elsewhere).
    assert (
        page.get_by_role("main").get_by_role("link", name="English").get_attribute("href")
        == "/_consent/cookies?lang=en"
    )
    page.goto(f"{base}{PAGE_PATH}?lang=en")
    assert page.locator("h1").inner_text() == "Cookie declaration"
    assert page.get_by_role("heading", name="Marketing and advertising").is_visible()
    screenshot(page, "cookie-declaration-en")


def test_my_data_page(
    make_settings: Callable[..., Settings], store: Store, tmp_path: Any, new_context: Callable[..., Any]
) -> None:
    import time

    from consent_gateway.my_data import MyDataEndpoint, Visitor
    from consent_gateway.policy import KEEP
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.records import RawRecord
    from consent_gateway.rows import RowBuilder
    from consent_gateway.store.schema import EVENT_COLUMNS

    settings = make_settings()
    migrate(store)
    salts = SaltStore(tmp_path / "keys")
    raw = RawRecord.of(
        kind="visit",
        name="request",
        category="analytics",
        action=KEEP,
        ts=time.time(),
        site=settings.site_id,
        host="t",
        path="/courses/피아노",
        query="",
        referrer="",
        user_agent="Mozilla/5.0",
        ip="203.0.113.9",
        consent_id="cid-browser-0000001",
        granted=frozenset({"necessary", "analytics"}),
        status=200,
    )
    lines, _ = RowBuilder(settings, salts).event_lines([raw])
    store.insert_lines("events", lines, [n for n, _ in EVENT_COLUMNS])
    endpoint = MyDataEndpoint(
        settings, salts, lambda: store, lambda request: Visitor("cid-browser-0000001", "203.0.113.9", "Mozilla/5.0")
    )
    app = Starlette(routes=[Route("/my-data-page", endpoint.handle)])
    server = LiveServer(ConsentGateway(app, settings)).start()
    try:
        page = new_context(locale="ko-KR").new_page()
        page.goto(f"http://127.0.0.1:{server.port}/my-data-page")
        assert page.locator("h1").inner_text() == "내 정보 조회"
        assert page.get_by_text("/courses/피아노").is_visible()
        screenshot(page, "my-data-ko")
    finally:
        server.stop()
