"""Helpers shared by the gateway's end-to-end tests: a small wrapped site, cookies, waiting for rows.

Nothing here fakes ClickHouse: the gateway under test writes to the embedded engine of
``tests/conftest.py`` and the tests read it back through the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Any

import httpx
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from consent_gateway import ConsentGateway
from consent_gateway.signing import COOKIE_SALT
from consent_gateway.store import Store

PAGE = '<!doctype html><html lang="ko"><head><title>t</title></head><body><main>원생 관리</main></body></html>'
# One cookie of each registered category, a glob-matched one and one the registry does not know.
SITE_COOKIES = (
    ("palette_session", "necessary"),
    ("ui_lang", "preferences"),
    ("_pa_id", "analytics"),
    ("_mk_pixel", "marketing"),
    ("_mk_campaign", "marketing"),
)
SSE_CHUNKS = (b"data: one\n\n", b"data: two\n\n", b"data: three\n\n")


async def _page(request: Request) -> Response:
    response = HTMLResponse(PAGE)
    for name, _ in SITE_COOKIES:
        response.set_cookie(name, f"v-{name}", httponly=name in ("palette_session", "_pa_id"))
    return response


async def _consent(request: Request) -> Response:
    consent = request.scope["consent"]
    return JSONResponse(
        {
            "status": consent.status.value,
            "categories": sorted(consent.categories),
            "consent_id": consent.consent_id,
            "gpc": consent.gpc,
            "version": consent.version,
        }
    )


async def _unknown(request: Request) -> Response:
    response = PlainTextResponse("ok")
    response.set_cookie("mystery_cookie", "1")
    return response


async def _vary(request: Request) -> Response:
    return PlainTextResponse("ok", headers={"Vary": "Accept-Encoding"})


async def _json(request: Request) -> Response:
    return Response(b'{"a": "</body>"}', media_type="application/json")


async def _gzip(request: Request) -> Response:
    return Response(gzip.compress(PAGE.encode(), mtime=0), media_type="text/html", headers={"Content-Encoding": "gzip"})


async def _stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in SSE_CHUNKS:
            yield chunk

    response = StreamingResponse(chunks(), media_type="text/event-stream")
    response.set_cookie("_mk_stream", "1")
    return response


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"has_consent": "consent" in websocket.scope})
    text = await websocket.receive_text()
    await websocket.send_text(text[::-1])
    await websocket.close()


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.events.append("startup")
    yield
    app.state.events.append("shutdown")


def site_app() -> Starlette:
    """A small site to wrap: HTML with cookies of every category, JSON, gzip, SSE and a websocket."""
    app = Starlette(
        routes=[
            Route("/", _page),
            Route("/students", _page),
            Route("/consent", _consent),
            Route("/unknown", _unknown),
            Route("/vary", _vary),
            Route("/json", _json),
            Route("/gzip", _gzip),
            Route("/stream", _stream),
            WebSocketRoute("/ws", _ws),
        ],
        lifespan=_lifespan,
    )
    app.state.events = []
    return app


def client_for(gateway: ConsentGateway, **kwargs: Any) -> TestClient:
    """A TestClient on the gateway; use it in ``with`` so lifespan starts and stops the writer."""
    return TestClient(gateway, base_url="http://testserver", follow_redirects=False, **kwargs)


class _SignerAt(TimestampSigner):
    """A signer whose clock is set by the test, to mint cookies signed in the past."""

    at = 0

    def get_timestamp(self) -> int:
        return self.at


def sign_cookie(
    key: str,
    *,
    consent_id: str = "cid-0123456789abcdef",
    version: str = "1.0",
    categories: Sequence[str] = ("necessary", "preferences", "analytics", "marketing"),
    method: str = "a",
    issued_at: int | None = None,
    signed_at: int | None = None,
    salt: str = COOKIE_SALT,
    payload: Any = None,
) -> str:
    """A ``cg_consent`` value made directly with itsdangerous (any key, salt, time or payload)."""
    signer = type("Signer", (_SignerAt,), {"at": int(signed_at if signed_at is not None else time.time())})
    serializer = URLSafeTimedSerializer(key, salt=salt, signer=signer)
    if payload is None:
        payload = [consent_id, version, list(categories), method, int(issued_at or time.time())]
    return str(serializer.dumps(payload))


def set_cookie_map(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header of a response, parsed, as name → the whole header."""
    out: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            out[name] = header
    return out


def flush(client: TestClient, gateway: ConsentGateway, timeout: float = 30.0) -> None:
    """Wait until everything the gateway has accepted so far is in ClickHouse."""
    assert client.portal is not None, "use the TestClient inside `with`"
    assert client.portal.call(gateway.runtime.pipeline.flush, timeout), "the writer did not flush"


def wait_for_count(store: Store, sql: str, expected: int, params: dict[str, Any] | None = None) -> int:
    """Poll ``sql`` (a count) until it equals ``expected`` or 200 polls have passed; returns the last count."""
    count = -1
    for _ in range(200):
        count = int(store.query_rows(sql, params)[0][0])
        if count == expected:
            return count
        time.sleep(0.05)
    return count


def run_asgi(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Call an ASGI app with a hand-made scope; the messages it sent, in order."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    async def main() -> None:
        try:
            await app(scope, receive, send)
        finally:
            runtime = getattr(app, "runtime", None)
            if runtime is not None:
                await runtime.stop()

    asyncio.run(main())
    return sent


def http_scope(
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    client: tuple[str, int] = ("203.0.113.7", 40000),
    query: bytes = b"",
) -> dict[str, Any]:
    """An HTTP scope as a server would build it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": client,
        "server": ("testserver", 80),
    }


def json_body(messages: list[dict[str, Any]]) -> Any:
    return json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"))
