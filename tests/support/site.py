"""A small site for the gateway to wrap, and consent cookies made without the gateway.

HTML with cookies of every category, JSON, gzip, SSE and a websocket; ``sign_cookie`` mints a
``cg_consent`` value with any key, salt, time or payload, ``set_cookie_map`` reads a response's
Set-Cookie headers back.
"""

from __future__ import annotations

import gzip
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
from starlette.websockets import WebSocket

from consent_gateway.signing import COOKIE_SALT

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
