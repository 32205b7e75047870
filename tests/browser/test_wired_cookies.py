"""In Chromium, behind the real gateway on uvicorn: the banner shown to a child the app marked, its
settings layer (built by banner.js) with the links to the declaration and my-data, and the
declaration the gateway serves itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings
from consent_gateway.children import NOTICE
from consent_gateway.settings import BannerTexts

from ..support.site import PAGE, SITE_COOKIES
from .conftest import LiveServer, screenshot

pytestmark = pytest.mark.browser
T = BannerTexts()


async def _page(request: Request) -> HTMLResponse:
    response = HTMLResponse(PAGE)
    for name, _ in SITE_COOKIES:
        response.set_cookie(name, f"v-{name}")
    if request.url.path == "/kid":
        response.headers["X-Consent-Child"] = "1"
    return response


@pytest.fixture
def wired(make_settings: Callable[..., Settings]) -> Iterator[LiveServer]:
    app = Starlette(routes=[Route("/", _page), Route("/kid", _page)])
    server = LiveServer(ConsentGateway(app, make_settings())).start()
    yield server
    server.stop()


def test_a_marked_child_sees_why_marketing_is_unavailable(wired: LiveServer, new_context: Callable[..., Any]) -> None:
    context = new_context(locale="ko-KR")
    page = context.new_page()
    page.goto(wired.url + "/kid")
    banner = page.locator("#cg-banner")
    expect(banner.locator(".cg-child")).to_have_text(NOTICE["ko"])
    assert "_mk_pixel" not in {c["name"] for c in context.cookies()}
    # The next page carries the mark in its cookie: the settings layer, built by banner.js from
    # /state, disables marketing, says why, and links the declaration and the visitor's data.
    page.goto(wired.url + "/")
    banner.get_by_role("button", name=T.settings_ko).click()
    prefs = page.locator("#cg-prefs")
    expect(prefs.locator(".cg-child")).to_have_text(NOTICE["ko"])
    expect(prefs.locator("#cg-cat-marketing")).to_be_disabled()
    expect(prefs.locator("#cg-cat-analytics")).to_be_enabled()
    expect(prefs.get_by_role("link", name="사용하는 쿠키 목록")).to_have_attribute("href", "/_consent/cookies?lang=ko")
    expect(prefs.get_by_role("link", name="내 정보 조회")).to_have_attribute("href", "/_consent/my-data")
    screenshot(page, "child-settings-layer-ko")
    # Accepting everything from there grants what a child may be granted, and not marketing.
    # The choice is stored by a POST: the next page is asked for once it has been answered.
    with page.expect_response(lambda r: r.request.method == "POST" and "/_consent" in r.url):
        prefs.get_by_role("button", name=T.accept_ko).click()
    page.wait_for_load_state()
    page.goto(wired.url + "/")
    names = {c["name"] for c in context.cookies()}
    assert "_pa_id" in names and "_mk_pixel" not in names and "cg_child" in names


def test_the_declaration_link_opens_the_gateways_declaration(
    wired: LiveServer, new_context: Callable[..., Any]
) -> None:
    page = new_context(locale="en-US").new_page()
    page.goto(wired.url + "/_consent/?locale=en")
    page.get_by_role("link", name="Cookies this site uses").click()
    expect(page.locator("h1")).to_have_text("Cookie declaration")
    assert page.get_by_role("cell", name="cg_consent").count() == 1
    screenshot(page, "gateway-declaration-en")
    # And back to the settings, in the declaration's language whatever the browser prefers.
    page.goto(wired.url + "/_consent/cookies?lang=ko")
    page.get_by_role("link", name="쿠키 설정 바꾸기").click()
    expect(page.locator("#cg-prefs-title")).to_have_text(T.settings_link_ko)
