"""Server-side enforcement: Set-Cookie headers of refused categories never leave the gateway."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from consent_gateway import ConsentGateway, ConsentMiddleware, Settings
from consent_gateway.store import Store
from tests.conftest import SECRET
from tests.gateway_support import (
    PAGE,
    SITE_COOKIES,
    SSE_CHUNKS,
    client_for,
    http_scope,
    run_asgi,
    set_cookie_map,
    sign_cookie,
    site_app,
)

CONSENTS = {
    "none": None,
    "reject_all": ["necessary"],
    "preferences": ["necessary", "preferences"],
    "analytics": ["necessary", "analytics"],
    "marketing": ["necessary", "marketing"],
    "analytics+marketing": ["necessary", "analytics", "marketing"],
    "accept_all": ["necessary", "preferences", "analytics", "marketing"],
}


@pytest.mark.parametrize("choice", list(CONSENTS))
@pytest.mark.parametrize("gpc", [False, True], ids=["no-gpc", "gpc"])
def test_set_cookie_passes_only_for_granted_categories(
    make_settings: Callable[..., Settings], choice: str, gpc: bool
) -> None:
    granted = CONSENTS[choice]
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        if granted is not None:
            client.cookies.set("cg_consent", sign_cookie(SECRET, categories=granted))
        response = client.get("/", headers={"Sec-GPC": "1"} if gpc else {})
    assert response.status_code == 200
    effective = set(granted or ["necessary"]) - ({"marketing"} if gpc else set())
    # The page sets five cookies in five headers; each passes exactly when its category is granted.
    assert set(set_cookie_map(response)) == {name for name, category in SITE_COOKIES if category in effective}
    assert len(response.headers.get_list("set-cookie")) == len(set_cookie_map(response))


def test_glob_patterns_match_and_http_only_attributes_survive(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        cookies = set_cookie_map(client.get("/"))
    assert {"_mk_pixel", "_mk_campaign"} <= set(cookies)  # both by the "_mk_*" pattern
    assert "httponly" in cookies["_pa_id"].lower()  # headers pass unchanged


def test_unknown_cookie_counts_as_preferences_and_is_logged_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with caplog.at_level(logging.WARNING, logger="consent_gateway.registry"), client_for(gateway) as client:
        for _ in range(3):
            assert "mystery_cookie" not in set_cookie_map(client.get("/unknown"))
        client.cookies.set("cg_consent", sign_cookie(SECRET, categories=["necessary", "preferences"]))
        assert "mystery_cookie" in set_cookie_map(client.get("/unknown"))
    warnings = [r for r in caplog.records if "mystery_cookie" in r.getMessage()]
    assert len(warnings) == 1
    assert "preferences" in warnings[0].getMessage() and "[cookies]" in warnings[0].getMessage()


def test_unknown_cookie_category_necessary_lets_it_pass(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings(unknown_cookie_category="necessary"))
    with client_for(gateway) as client:
        assert "mystery_cookie" in set_cookie_map(client.get("/unknown"))


def test_app_cannot_overwrite_the_consent_cookie_name_unfiltered(make_settings: Callable[..., Settings]) -> None:
    # The gateway's own cookie is registered as necessary: the wrapped app cannot be blocked from
    # clearing it, and the registry never warns about it.
    gateway = ConsentGateway(site_app(), make_settings())
    assert gateway.runtime.cookies.category_of("cg_consent") == "necessary"


def test_vary_cookie_added(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        assert client.get("/").headers.get_list("vary") == ["Cookie"]
        assert client.get("/vary").headers.get_list("vary") == ["Accept-Encoding, Cookie"]


def test_set_cookie_names_are_read_like_a_browser_reads_them() -> None:
    from consent_gateway.cookies import set_cookie_name

    assert set_cookie_name(b" _mk_x = 1; Path=/") == "_mk_x"
    # No '=': a nameless cookie; the whole pair is classified, so it cannot slip through unchecked.
    assert set_cookie_name("noequals; Path=/") == "noequals"


def test_existing_vary_cookie_not_duplicated(make_settings: Callable[..., Settings]) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"vary", b"Accept-Language, Cookie")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    gateway = ConsentGateway(app, make_settings())
    messages = run_asgi(gateway, http_scope("/"))
    start = messages[0]
    assert [v for k, v in start["headers"] if k == b"vary"] == [b"Accept-Language, Cookie"]


def test_html_injection_drops_the_apps_content_length(make_settings: Callable[..., Settings]) -> None:
    """The banner goes in as the page streams: the server frames the changed body (chunked)."""
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        response = client.get("/")
    assert "content-length" not in response.headers
    assert len(response.content) > len(PAGE.encode())
    text = response.text
    assert "<main>원생 관리</main>" in text
    assert text.index('href="/_consent/static/banner.css"') < text.index("</head>")
    assert text.index('id="cg-root"') < text.index("</body>")
    assert '<form method="post" action="/_consent/"' in text


def test_inject_banner_off_leaves_html_alone(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings(inject_banner=False))
    with client_for(gateway) as client:
        response = client.get("/")
    assert response.text == PAGE
    assert "_pa_id" not in set_cookie_map(response)  # enforcement does not depend on the banner


def test_non_html_and_gzip_responses_pass_byte_for_byte(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    json_messages = run_asgi(gateway, http_scope("/json"))
    body = b"".join(m.get("body", b"") for m in json_messages if m["type"] == "http.response.body")
    assert body == b'{"a": "</body>"}'

    gateway = ConsentGateway(site_app(), make_settings(inject_banner=False))
    gzip_messages = run_asgi(gateway, http_scope("/gzip"))
    raw = b"".join(m.get("body", b"") for m in gzip_messages if m["type"] == "http.response.body")
    assert raw == gzip.compress(PAGE.encode(), mtime=0)  # without a banner: not decoded, not re-encoded
    headers = dict(gzip_messages[0]["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert int(headers[b"content-length"]) == len(raw)


def test_streaming_response_passes_chunk_by_chunk_in_order(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    messages = run_asgi(gateway, http_scope("/stream"))
    assert messages[0]["type"] == "http.response.start"
    headers = messages[0]["headers"]
    assert (b"content-type", b"text/event-stream; charset=utf-8") in headers
    assert not [v for k, v in headers if k == b"set-cookie"]  # the marketing cookie was refused
    chunks = [m["body"] for m in messages[1:] if m["type"] == "http.response.body" and m.get("body")]
    assert chunks == list(SSE_CHUNKS)
    assert messages[-1]["type"] == "http.response.body" and not messages[-1].get("more_body", False)


def test_large_streamed_html_is_passed_on_chunk_by_chunk(make_settings: Callable[..., Settings]) -> None:
    chunk = b"<p>" + b"x" * 65536 + b"</p>"
    count = 40

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<html><body>", "more_body": True})
        for _ in range(count):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"</body></html>", "more_body": False})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/big"))
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    # Every chunk after the banner goes on as it came, none held back.
    assert bodies[1:] == [chunk] * count + [b"</body></html>"]
    assert bodies[0].startswith(b"<html>") and b"<body>" in bodies[0] and bodies[0].count(b'id="cg-root"') == 1
    assert messages[-1].get("more_body", False) is False


def test_websocket_and_lifespan_pass_through(make_settings: Callable[..., Settings]) -> None:
    site = site_app()
    gateway = ConsentGateway(site, make_settings())
    with client_for(gateway) as client:
        assert site.state.events == ["startup"]
        assert gateway.runtime.started  # the gateway's own resources open in the same lifespan
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"has_consent": True}
            ws.send_text("abc")
            assert ws.receive_text() == "cba"
    assert site.state.events == ["startup", "shutdown"]
    assert not gateway.runtime.started


def test_middleware_inside_starlette_app(make_settings: Callable[..., Settings]) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def page(request):  # type: ignore[no-untyped-def]
        response = HTMLResponse(f"<html><body>{request.scope['consent'].status}</body></html>")
        response.set_cookie("_pa_id", "1")
        response.set_cookie("palette_session", "s")
        return response

    app = Starlette(routes=[Route("/", page)], middleware=[Middleware(ConsentMiddleware, settings=make_settings())])
    with TestClient(app) as client:
        response = client.get("/")
        assert "unset" in response.text
        assert set(set_cookie_map(response)) == {"palette_session"}
        assert client.get("/_consent/state").status_code == 404  # the routes come with ConsentGateway only


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (b"Accept-Encoding", b"Accept-Encoding, Cookie"),
        (b"X-Cookie-Id", b"X-Cookie-Id, Cookie"),  # a longer name containing "cookie" is not Cookie
        (b"accept-language, COOKIE", b"accept-language, COOKIE"),
        (b"*", b"*"),
    ],
)
def test_vary_tokens_are_compared_whole(make_settings: Callable[..., Settings], vary: bytes, expected: bytes) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"vary", vary)]})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    assert [v for k, v in messages[0]["headers"] if k == b"vary"] == [expected]


def test_head_gets_the_same_headers_as_get(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway) as client:
        get = client.get("/")
        head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert "content-length" not in head.headers and "content-length" not in get.headers
    assert {k: v for k, v in head.headers.items() if k != "set-cookie"} == {
        k: v for k, v in get.headers.items() if k not in ("set-cookie", "transfer-encoding")
    }
    assert set(set_cookie_map(head)) == set(set_cookie_map(get)) == {"palette_session"}


def test_html_file_sent_by_pathsend_still_gets_its_headers(
    make_settings: Callable[..., Settings], tmp_path: Path, store: Store
) -> None:
    """Servers with the ``http.response.pathsend`` extension (e.g. Granian) send files by path."""
    from starlette.responses import FileResponse

    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        response = FileResponse(page)
        response.set_cookie("_mk_pixel", "1")
        response.set_cookie("palette_session", "s")
        await response(scope, receive, send)

    scope = http_scope("/page")
    scope["extensions"] = {"http.response.pathsend": {}}
    messages = run_asgi(ConsentGateway(app, make_settings()), scope)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.pathsend"]
    headers = messages[0]["headers"]
    assert [v for k, v in headers if k == b"set-cookie"] == [b"palette_session=s; Path=/; SameSite=lax"]
    assert int(dict(headers)[b"content-length"]) == page.stat().st_size  # the file as it is
    assert store.query_rows(f"SELECT path FROM {store.table('events')}") == [("/page",)]


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_html_responses_get_no_banner(make_settings: Callable[..., Settings], status: int) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", b'"v1"')]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    assert messages[0]["status"] == status
    assert b"content-length" not in dict(messages[0]["headers"])
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b""


def test_html_sent_in_chunks_is_injected_once_and_streamed(make_settings: Callable[..., Settings]) -> None:
    parts = [b"<html><head></head><body>", "<p>출결</p>".encode(), b"</body></html>"]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    messages = run_asgi(ConsentGateway(app, make_settings()), http_scope("/"))
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert [m.get("more_body", False) for m in bodies] == [True, True, False]
    assert [m["body"] for m in bodies[1:]] == parts[1:]  # the banner went in with the first part
    body = b"".join(m["body"] for m in bodies)
    assert b"content-length" not in dict(messages[0]["headers"])
    assert body.count(b'id="cg-root"') == 1 and "<p>출결</p>".encode() in body
