"""Bare app against gateway-wrapped app, byte for byte, with real FastAPI and Django (ASGI) apps.

The only differences allowed: refused Set-Cookie headers removed, ``Vary: Cookie``, the banner
(stylesheet and script in ``<head>``, the no-JavaScript form after ``<body>``), the app's
Content-Length left to the server and a strong ETag made weak where the banner went in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.middleware.gzip import GZipMiddleware

from consent_gateway import ConsentGateway, Settings
from tests.gateway_support import http_scope, run_asgi
from tests.support import django_site

PAGE = (
    '<!doctype html><html lang="en"><head><title>Orders</title>'
    '<script>if (a </head>) {}</script></head><body class="shop"><h1>Orders</h1></body></html>'
)
Headers = list[tuple[bytes, bytes]]


def split(messages: list[dict[str, Any]]) -> tuple[int, Headers, bytes]:
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], [(k.lower(), v) for k, v in start["headers"]], body


def strip_banner(gateway: ConsentGateway, scope: dict[str, Any], body: bytes, csp: list[bytes]) -> bytes:
    """The page without what the gateway put in, found by rendering it again for the same visitor."""
    runtime = gateway.runtime
    consent = runtime.consents.consent_for(None, False, runtime.policy_major(), ())[0]
    facts = SimpleNamespace(accept_language="")
    head_script, assets = runtime.banner.asset_tags(consent, csp)
    root = runtime.banner.root_html(consent, facts, scope, body[:2048])
    assert body.count(assets.encode()) == 1 and body.count(root) == 1, "the banner went in exactly once"
    return body.replace(head_script.encode(), b"", 1).replace(assets.encode(), b"", 1).replace(root, b"", 1)


def expected_headers(gateway: ConsentGateway, bare: Headers, changed: bool) -> Headers:
    """The bare app's headers as the gateway must pass them on for a visitor without consent."""
    runtime = gateway.runtime
    consent = runtime.consents.consent_for(None, False, runtime.policy_major(), ())[0]
    out: Headers = []
    for key, value in bare:
        if key == b"set-cookie":
            name = next(iter(SimpleCookie(value.decode("latin-1"))))
            if not consent.allows(runtime.cookies.category_of(name)):
                continue
        if changed and key == b"content-length":
            continue
        if changed and key == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        if key == b"vary":
            value += b", Cookie"
        out.append((key, value))
    if not any(key == b"vary" for key, _ in out):
        out.append((b"vary", b"Cookie"))
    return out


def compare(gateway: ConsentGateway, app: Any, scope: dict[str, Any], banner: bool) -> bytes:
    bare_status, bare_headers, bare_body = split(run_asgi(app, dict(scope)))
    status, headers, body = split(run_asgi(gateway, dict(scope)))
    assert status == bare_status
    assert headers == expected_headers(gateway, bare_headers, banner)
    if banner:
        csp = [v for k, v in bare_headers if k == b"content-security-policy"]
        assert strip_banner(gateway, scope, body, csp) == bare_body
    else:
        assert body == bare_body
    return body


# -- FastAPI ---------------------------------------------------------------------------------


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        csp = "script-src 'nonce-abcdefgh12'"
        response = HTMLResponse(PAGE, headers={"etag": '"o1"', "content-security-policy": csp})
        response.set_cookie("session", "s1", httponly=True)
        response.set_cookie("_mk_pixel", "1")
        return response

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/stream")
    def stream() -> StreamingResponse:
        def parts() -> Iterator[bytes]:
            yield b"<!doctype html><html><head><title>s</title></head><body>"
            for n in range(7):
                yield b"<p>%d</p>" % n
            yield b"</body></html>"

        return StreamingResponse(parts(), media_type="text/html")

    return app


@pytest.mark.parametrize(
    ("path", "banner"),
    [("/", True), ("/items/3", False), ("/items/x", False), ("/stream", True), ("/missing", False)],
)
def test_fastapi_bare_and_wrapped_match(make_settings: Callable[..., Settings], path: str, banner: bool) -> None:
    app = fastapi_app()
    compare(ConsentGateway(app, make_settings()), app, http_scope(path), banner)


def test_fastapi_behind_gzip_middleware_matches_once_decoded(make_settings: Callable[..., Settings]) -> None:
    import gzip

    app = GZipMiddleware(fastapi_app(), minimum_size=10)
    scope = http_scope("/", headers=[(b"accept-encoding", b"gzip")])
    _, bare_headers, bare_body = split(run_asgi(app, dict(scope)))
    gateway = ConsentGateway(app, make_settings())
    _, headers, body = split(run_asgi(gateway, dict(scope)))
    assert (b"content-encoding", b"gzip") in headers
    csp = [v for k, v in bare_headers if k == b"content-security-policy"]
    assert strip_banner(gateway, scope, gzip.decompress(body), csp) == gzip.decompress(bare_body)
    assert headers == expected_headers(gateway, bare_headers, changed=True)


# -- Django ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_app() -> Any:
    return django_site.asgi_app(PAGE)


def test_django_page_matches_bare_but_for_the_banner(make_settings: Callable[..., Settings], django_app: Any) -> None:
    scope = http_scope("/")
    bare = run_asgi(django_app, dict(scope))
    gateway = ConsentGateway(django_app, make_settings())
    wrapped = run_asgi(gateway, dict(scope))
    # The CSRF token differs per request: compare with it masked out.
    _, bare_headers, bare_body = split(bare)
    status, headers, body = split(wrapped)
    assert status == 200
    names = [k for k, _ in headers]
    assert names == [k for k, _ in expected_headers(gateway, bare_headers, changed=True)]
    assert b'<form><input name="t" value="' in body
    page = strip_banner(gateway, scope, body, [])
    mask = bare_body.index(b'value="') + 7
    assert page[:mask] == bare_body[:mask] and page[mask + 4 :] == bare_body[mask + 4 :]


def test_django_empty_redirect_gets_no_banner(make_settings: Callable[..., Settings], django_app: Any) -> None:
    gateway = ConsentGateway(django_app, make_settings())
    compare(gateway, django_app, http_scope("/go"), banner=False)


def test_django_head_headers_change_as_get_headers_do(make_settings: Callable[..., Settings], django_app: Any) -> None:
    """HEAD gets the changes GET gets (no Content-Length, weak ETag) without a body to look at."""
    gateway = ConsentGateway(django_app, make_settings())
    _, get_headers, get_body = split(run_asgi(gateway, http_scope("/")))
    _, bare_head, _ = split(run_asgi(django_app, http_scope("/", method="HEAD")))
    gateway = ConsentGateway(django_app, make_settings())
    _, head_headers, head_body = split(run_asgi(gateway, http_scope("/", method="HEAD")))
    # Django's ASGI handler sends the page for HEAD too (the server drops it): no banner goes in.
    assert b'id="cg-root"' not in head_body and get_body.count(b'id="cg-root"') == 1
    assert b"content-length" in dict(bare_head)
    assert b"content-length" not in dict(head_headers) and b"content-length" not in dict(get_headers)

    def names(headers: Headers) -> list[bytes]:  # the CSRF token differs per request
        return [k for k, _ in headers]

    assert names(head_headers) == names(expected_headers(gateway, bare_head, changed=True))
