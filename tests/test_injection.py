"""The banner goes into real pages as they stream: compressed, in their charset, under their CSP,
never inside scripts, comments or attributes, and only into whole HTML documents."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import pytest
import zstandard
from brotli_asgi import BrotliMiddleware
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consent_gateway import ConsentGateway, Settings
from consent_gateway.assets import static_dir
from consent_gateway.compression import content_codings
from consent_gateway.inject import HtmlInjector
from tests.gateway_support import client_for, http_scope, run_asgi

PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
    '<script>var s = "</head><body>"; // <!-- not a comment --></script>'
    "<!-- </head> <body> --><style>p::after{content:'</head>'}</style></head>"
    '<body class="a>b" data-x=\'<body>\'><textarea></body><body></textarea>'
    + "<p>item</p>" * 200
    + "</body></html>"
)
ROOT = b'<div id="cg-root"'


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def headers_of(messages: list[dict[str, Any]]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in messages[0]["headers"]}


def run_split(page: bytes, size: int) -> bytes:
    injector = HtmlInjector(b"[script]", b"[assets]", lambda start: b"[banner]")
    out = [injector.feed(page[i : i + size]) for i in range(0, len(page), size)]
    return b"".join(out) + injector.finish()


# -- the injector on its own ------------------------------------------------------------------


def test_injection_points_are_never_inside_scripts_comments_raw_text_or_attributes() -> None:
    page = PAGE.encode()
    out = run_split(page, len(page))
    assert out.count(b"[assets]") == out.count(b"[banner]") == 1
    head_end = page.rindex(b"</head>")
    assert out.index(b"[script]") == page.index(b"<head>") + len(b"<head>")  # right after <head>
    assert out.index(b"[assets]") == head_end + len(b"[script]")  # right before the real </head>
    body_tag_end = page.index(b"<textarea>")
    assert out.index(b"[banner]") == body_tag_end + len(b"[script][assets]")  # right after <body ...>
    assert out.replace(b"[script]", b"").replace(b"[assets]", b"").replace(b"[banner]", b"") == page


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 64])
def test_any_chunking_gives_the_same_page(size: int) -> None:
    page = PAGE.encode()
    assert run_split(page, size) == run_split(page, len(page))


def test_fall_backs_and_fragments() -> None:
    assert run_split(b"<body>x", 100) == b"[script][assets]<body>[banner]x"  # no head: assets before <body>
    assert run_split(b"<head></head>x", 100) == b"<head>[script][assets]</head>x[banner]"  # no body tag
    assert run_split(b"<!DOCTYPE html><p>x", 100) == b"<!DOCTYPE html><p>x[script][assets][banner]"
    assert run_split(b"<div>a partial</div>", 100) == b"<div>a partial</div>"  # a fragment: untouched


def test_quoted_values_after_spaced_equals_and_stray_quotes() -> None:
    page = b"<html><head></head><body data-a = \"x>y\" it's title='<p>'>z</body></html>"
    expected = b"<html><head>[script][assets]</head><body data-a = \"x>y\" it's title='<p>'>[banner]z</body></html>"
    for size in (1, 2, 3, len(page)):
        assert run_split(page, size) == expected


def test_look_ahead_is_bounded() -> None:
    """Only a tag name or marker cut at a chunk's end is held, never the page."""
    injector = HtmlInjector(b"", b"[assets]", lambda start: b"[banner]")
    sent = injector.feed(b"<html><head><title>t</title>" + b"x" * 100_000 + b"</hea")
    assert len(sent) == len(b"<html><head><title>t</title>") + 100_000
    assert injector.feed(b"d><body>") == b"[assets]</head><body>[banner]"


def test_several_content_encoding_headers_read_as_one_list() -> None:
    assert content_codings([b"gzip", b"identity"]) == [b"gzip"]
    assert content_codings([b"identity, br"]) == [b"br"]
    assert content_codings([b"gzip, br"]) == [b"gzip", b"br"]


# -- compressed pages through the gateway ----------------------------------------------------


def page_app(page: bytes = PAGE.encode(), headers: dict[str, str] | None = None, status: int = 200) -> Starlette:
    async def home(request: Request) -> Response:
        response = Response(page, status_code=status, media_type="text/html", headers=headers)
        response.set_cookie("_mk_pixel", "1")
        response.set_cookie("palette_session", "s")
        return response

    return Starlette(routes=[Route("/", home)])


def decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "deflate":
        return zlib.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.mark.parametrize(
    ("coding", "wrap"),
    [
        ("gzip", lambda app: GZipMiddleware(app, minimum_size=10)),
        ("br", lambda app: BrotliMiddleware(app, minimum_size=10)),
    ],
)
def test_compressed_pages_get_the_banner_in_their_own_coding(
    make_settings: Callable[..., Settings], coding: str, wrap: Callable[[Any], Any]
) -> None:
    from tests.test_real_frameworks import expected_headers, split, strip_banner

    scope = http_scope("/", headers=[(b"accept-encoding", b"gzip, deflate, br")])
    bare = run_asgi(wrap(page_app()), dict(scope))
    gateway = ConsentGateway(wrap(page_app()), make_settings())
    wrapped = run_asgi(gateway, dict(scope))
    assert headers_of(bare)[b"content-encoding"] == headers_of(wrapped)[b"content-encoding"] == coding.encode()
    page = decode(coding, body_of(wrapped))  # decodes once: not double-encoded
    assert page.count(ROOT) == 1 and page.count(b"banner.css") == 1
    # Byte for byte, once decoded, but for the banner; headers but for the allowed differences.
    assert strip_banner(gateway, scope, page, []) == decode(coding, body_of(bare))
    assert split(wrapped)[1] == expected_headers(gateway, split(bare)[1], changed=True)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_streamed_compressed_page_stays_streamed(make_settings: Callable[..., Settings], coding: str) -> None:
    """Each chunk is flushed in its coding: the browser can render it before the next arrives."""
    parts = [b"<!doctype html><html><head><title>t</title></head><body>", b"<p>one</p>", b"<p>two</p></body></html>"]
    encoders = {
        "gzip": lambda: zlib.compressobj(6, zlib.DEFLATED, 31),
        "deflate": lambda: zlib.compressobj(6, zlib.DEFLATED, 15),
    }
    seen: list[bytes] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-encoding", coding.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if coding in encoders:
            enc = encoders[coding]()
            pieces = [enc.compress(p) + enc.flush(zlib.Z_SYNC_FLUSH) for p in parts[:-1]]
            pieces.append(enc.compress(parts[-1]) + enc.flush())
        elif coding == "br":
            pieces = [brotli.compress(b"".join(parts))[:5], brotli.compress(b"".join(parts))[5:], b""]
        else:
            pieces = [zstandard.ZstdCompressor().compress(b"".join(parts)), b"", b""]
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})
            seen.append(piece)

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    page = decode(coding, body_of(messages))
    assert page.count(ROOT) == 1
    assert page.replace(page[page.index(b"<link") : page.index(b"</head>")], b"").startswith(
        b"<!doctype html><html><head><title>t</title></head><body>"
    )
    if coding in encoders:
        first = next(m for m in messages if m["type"] == "http.response.body")["body"]
        # The first message alone decodes to the page's start with the banner: flushed, not held.
        assert ROOT in zlib.decompressobj(31 if coding == "gzip" else 15).decompress(first)


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_highly_compressed_chunk_is_decoded_piece_by_piece(
    make_settings: Callable[..., Settings], coding: str
) -> None:
    from consent_gateway.compression import PIECE

    page = b"<!doctype html><html><head></head><body>" + b"<p>same</p>" * (PIECE // 2) + b"</body></html>"
    compressed = gzip.compress(page) if coding == "gzip" else brotli.compress(page)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html"), (b"content-encoding", coding.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": compressed})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert len(bodies) >= len(page) // (2 * PIECE)  # one app chunk, passed on in pieces
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    out = decode(coding, body_of(messages))
    assert out.count(ROOT) == 1 and out.endswith(b"<p>same</p></body></html>")


def test_gzip_plus_identity_headers_are_read_as_gzip(make_settings: Callable[..., Settings]) -> None:
    compressed = gzip.compress(PAGE.encode(), mtime=0)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html"), (b"content-encoding", b"gzip"), (b"content-encoding", b"identity")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": compressed})

    page = gzip.decompress(body_of(run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))))
    assert page.count(ROOT) == 1 and PAGE.encode()[:50] == page[:50]


def test_corrupt_gzip_is_passed_on_untouched(make_settings: Callable[..., Settings]) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html"), (b"content-encoding", b"gzip")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"not gzip at all"})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    assert body_of(messages) == b"not gzip at all"


# -- charset ---------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", ["header", "meta"])
def test_euc_kr_page_gets_a_euc_kr_banner(make_settings: Callable[..., Settings], declared: str) -> None:
    meta = '<meta charset="euc-kr">' if declared == "meta" else ""
    text = f'<!doctype html><html lang="ko"><head>{meta}<title>출결</title></head><body><p>원생 관리</p></body></html>'
    media = "text/html; charset=euc-kr" if declared == "header" else "text/html"

    async def home(request: Request) -> Response:
        # A raw header: media_type= would add "charset=utf-8" to it.
        return Response(text.encode("euc-kr"), headers={"content-type": media})

    app = Starlette(routes=[Route("/", home)])
    body = body_of(run_asgi(ConsentGateway(app, make_settings()), http_scope("/")))
    page = body.decode("euc-kr")  # every byte valid EUC-KR
    assert "원생 관리" in page and "동의" in page  # the banner's Korean reads as Korean
    assert page.count('id="cg-root"') == 1


def test_characters_the_charset_lacks_become_references(make_settings: Callable[..., Settings]) -> None:
    async def home(request: Request) -> Response:
        return Response(b"<html><head></head><body>x</body></html>", media_type="text/html; charset=iso-8859-1")

    app = Starlette(routes=[Route("/", home)])
    body = body_of(run_asgi(ConsentGateway(app, make_settings(default_locale="ko")), http_scope("/")))
    assert body.decode("cp1252").count('id="cg-root"') == 1
    assert b"&#46041;&#51032;" in body  # "동의" as character references


# -- CSP -------------------------------------------------------------------------------------


def test_nonces_on_script_and_stylesheet(make_settings: Callable[..., Settings]) -> None:
    csp = "default-src 'self'; script-src 'nonce-scriptNonce123'; style-src 'nonce-styleNonce456'"
    app = page_app(headers={"content-security-policy": csp})
    page = body_of(run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))).decode()
    assert '<link rel="stylesheet" href="/_consent/static/banner.css" nonce="styleNonce456">' in page
    assert '<script src="/_consent/static/banner.js" defer nonce="scriptNonce123"></script>' in page


def test_hashes_where_the_policy_uses_hashes(make_settings: Callable[..., Settings]) -> None:
    csp = "default-src 'self'; script-src 'sha384-abc'; style-src 'self'"
    app = page_app(headers={"content-security-policy": csp})
    page = body_of(run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))).decode()
    digest = base64.b64encode(hashlib.sha384((static_dir() / "banner.js").read_bytes()).digest()).decode()
    assert f'<script src="/_consent/static/banner.js" defer integrity="sha384-{digest}"></script>' in page
    assert '<link rel="stylesheet" href="/_consent/static/banner.css">' in page


# -- which responses get a banner ------------------------------------------------------------


def test_strong_etag_becomes_weak_and_head_matches_get(make_settings: Callable[..., Settings]) -> None:
    app = page_app(headers={"etag": '"v1"'})
    gateway = ConsentGateway(app, make_settings())
    with client_for(gateway) as client:
        get = client.get("/")
        head = client.head("/")
    assert get.headers["etag"] == head.headers["etag"] == 'W/"v1"'
    assert get.content.count(ROOT) == 1 and head.content == b""
    drop = {"set-cookie", "transfer-encoding", "content-length"}
    assert {k: v for k, v in get.headers.items() if k not in drop} == {
        k: v for k, v in head.headers.items() if k not in drop
    }
    assert "content-length" not in head.headers


@pytest.mark.parametrize("status", [206, 201, 302])
def test_no_banner_outside_pages(make_settings: Callable[..., Settings], status: int) -> None:
    app = page_app(status=status, headers={"etag": '"v1"'})
    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    assert body_of(messages) == PAGE.encode()
    assert headers_of(messages)[b"etag"] == b'"v1"'
    assert int(headers_of(messages)[b"content-length"]) == len(PAGE.encode())


def test_error_pages_get_the_banner(make_settings: Callable[..., Settings]) -> None:
    messages = run_asgi(ConsentGateway(page_app(status=404), make_settings()), http_scope("/"))
    assert messages[0]["status"] == 404 and body_of(messages).count(ROOT) == 1


def test_empty_bodies_get_no_banner(make_settings: Callable[..., Settings]) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    assert body_of(messages) == b""
    messages = run_asgi(ConsentGateway(page_app(b""), make_settings()), http_scope("/"))
    assert body_of(messages) == b"" and headers_of(messages)[b"content-length"] == b"0"


def test_first_bytes_go_on_before_the_app_sends_more(make_settings: Callable[..., Settings]) -> None:
    """The page's start (with the banner) reaches the server while the app is still working."""
    received: list[bytes] = []
    seen_when_second_sent: list[bytes] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<html><head></head><body><h1>Hi", "more_body": True})
        seen_when_second_sent.extend(received)
        await send({"type": "http.response.body", "body": b"</h1></body></html>"})

    gateway = ConsentGateway(app, make_settings())

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            received.append(message["body"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def main() -> None:
        try:
            await gateway(http_scope("/"), receive, send)
        finally:
            await gateway.runtime.stop()

    asyncio.run(main())
    assert len(seen_when_second_sent) == 1 and ROOT in seen_when_second_sent[0]
    assert b"".join(received).endswith(b"<h1>Hi</h1></body></html>")


# -- WebSockets ------------------------------------------------------------------------------


def test_websocket_accept_cookies_are_filtered_and_scope_has_consent(make_settings: Callable[..., Settings]) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def ws(websocket: WebSocket) -> None:
        headers = [(b"set-cookie", b"_mk_pixel=1; Path=/"), (b"set-cookie", b"palette_session=s; Path=/")]
        await websocket.accept(headers=headers)
        await websocket.send_json({"status": websocket.scope["consent"].status.value})
        await websocket.close()

    gateway = ConsentGateway(Starlette(routes=[WebSocketRoute("/ws", ws)]), make_settings())
    with client_for(gateway) as client, client.websocket_connect("/ws") as socket:
        assert socket.receive_json() == {"status": "unset"}
        accepted = socket.extra_headers
    cookies = [v for k, v in accepted if k.lower() == b"set-cookie"]
    assert cookies == [b"palette_session=s; Path=/"]


def test_a_child_mark_on_a_websocket_handshake_is_consumed(make_settings: Callable[..., Settings]) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def ws(websocket: WebSocket) -> None:
        headers = [(b"x-consent-child", b"1"), (b"set-cookie", b"_mk_pixel=1; Path=/")]
        await websocket.accept(headers=headers)
        await websocket.close()

    gateway = ConsentGateway(Starlette(routes=[WebSocketRoute("/ws", ws)]), make_settings())
    with client_for(gateway) as client, client.websocket_connect("/ws") as socket:
        accepted = socket.extra_headers
    names = [k.lower() for k, _ in accepted]
    cookies = [v for k, v in accepted if k.lower() == b"set-cookie"]
    assert b"x-consent-child" not in names
    assert [c.split(b"=", 1)[0] for c in cookies] == [b"cg_child"]  # the mark kept; the marketing pixel not


def test_websocket_denial_response_cookies_are_filtered(make_settings: Callable[..., Settings]) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"set-cookie", b"_mk_pixel=1"), (b"set-cookie", b"palette_session=s")]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    scope = {**http_scope("/ws"), "type": "websocket", "extensions": {"websocket.http.response": {}}}
    messages = run_asgi(ConsentGateway(app, make_settings()), scope)
    assert [v for k, v in messages[0]["headers"] if k == b"set-cookie"] == [b"palette_session=s"]
    assert messages[1]["body"] == b"no"
