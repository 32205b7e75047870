"""The banner on sites as they are deployed: behind gzip and brotli middleware, under a strict CSP
that allows styles only by nonce, and on a legacy EUC-KR page.

Screenshots go to test-output/screenshots/ (real-site-*.png) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from brotli_asgi import BrotliMiddleware
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings
from consent_gateway.settings import BannerTexts

from .conftest import LiveServer, screenshot

pytestmark = pytest.mark.browser

T = BannerTexts()
NONCE = "c3RyaWN0LW5vbmNlLTk4NzY1"
STRICT_CSP = f"default-src 'self'; script-src 'nonce-{NONCE}'; style-src 'nonce-{NONCE}'"
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""
SHOP = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
    '<script nonce="{nonce}">window.shop = "</head><body>";</script></head>'
    "<body><main><h1>Shop</h1>" + "<p>Our products, in many words.</p>" * 40 + "</main></body></html>"
)
LEGACY = (
    '<!doctype html><html lang="ko"><head><meta http-equiv="Content-Type" content="text/html; charset=euc-kr">'
    "<title>학원 안내</title></head><body><main><h1>학원 안내</h1><p>원생 관리와 출결 안내입니다.</p>"
    "</main></body></html>"
)


async def shop(request: Request) -> Response:
    response = Response(SHOP.replace("{nonce}", NONCE), media_type="text/html")
    response.set_cookie("_mk_pixel", "1")
    return response


async def strict(request: Request) -> Response:
    headers = {"content-security-policy": STRICT_CSP}
    return Response(SHOP.replace("{nonce}", NONCE), media_type="text/html", headers=headers)


async def legacy(request: Request) -> Response:
    # A raw Content-Type without charset: the page's own <meta http-equiv> declares EUC-KR.
    return Response(LEGACY.encode("euc-kr"), headers={"content-type": "text/html"})


def site() -> Starlette:
    return Starlette(routes=[Route("/", shop), Route("/strict", strict), Route("/legacy", legacy)])


@pytest.fixture
def serve_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[[Any], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(ConsentGateway(app, make_settings())).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("coding", "wrap"),
    [("gzip", lambda app: GZipMiddleware(app, minimum_size=100)), ("br", lambda app: BrotliMiddleware(app))],
)
def test_banner_works_on_a_compressed_site(
    serve_app: Callable[[Any], LiveServer], new_context: Any, coding: str, wrap: Callable[[Any], Any]
) -> None:
    server = serve_app(wrap(site()))
    context = new_context()
    page = context.new_page()
    response = page.goto(server.url + "/")
    assert response is not None and response.ok
    assert response.headers["content-encoding"] == coding  # still compressed for the browser
    banner = page.locator("#cg-banner")
    expect(banner).to_be_visible()
    assert page.evaluate("window.shop") == "</head><body>"  # the page's script string is intact
    assert page.evaluate("getComputedStyle(document.getElementById('cg-banner')).position") == "fixed"
    screenshot(page, f"real-site-{coding}")
    banner.get_by_role("button", name=T.accept_en).click()
    expect(banner).to_have_count(0)
    assert "cg_consent" in {c["name"] for c in context.cookies()}
    page.reload()
    expect(page.locator("#cg-banner")).to_have_count(0)
    assert "_mk_pixel" in {c["name"] for c in context.cookies()}


def test_banner_is_styled_under_a_nonce_only_style_policy(
    serve_app: Callable[[Any], LiveServer], new_context: Any
) -> None:
    server = serve_app(site())
    context = new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.goto(server.url + "/strict")
    expect(page.locator("#cg-banner")).to_be_visible()
    assert page.evaluate("document.querySelector('link[href$=\"/banner.css\"]').nonce") == NONCE
    assert page.evaluate("getComputedStyle(document.getElementById('cg-banner')).position") == "fixed"
    screenshot(page, "real-site-strict-csp")
    assert page.evaluate("window.__csp") == []
    page.locator("#cg-banner").get_by_role("button", name=T.reject_en).click()
    expect(page.locator("#cg-banner")).to_have_count(0)


def test_banner_reads_right_on_an_euc_kr_page(serve_app: Callable[[Any], LiveServer], new_context: Any) -> None:
    server = serve_app(site())
    page = new_context().new_page()
    page.goto(server.url + "/legacy")
    assert page.evaluate("document.characterSet") == "EUC-KR"
    expect(page.locator("h1")).to_have_text("학원 안내")
    expect(page.locator("#cg-title")).to_have_text(T.title_ko)
    expect(page.locator("#cg-banner").get_by_role("button", name=T.accept_ko)).to_be_visible()
    screenshot(page, "real-site-euc-kr")
