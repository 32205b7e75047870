"""ConsentMiddleware: pure ASGI enforcement of the visitor's consent around a wrapped app."""

from __future__ import annotations

import time
from typing import Any

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .consent import Consent
from .cookies import set_cookie_names
from .policy import VISIT
from .records import RawRecord
from .request import RequestFacts
from .runtime import GatewayRuntime
from .settings import Settings

_ASSET_SUFFIXES = (
    ".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".avif",
    ".ico", ".woff", ".woff2", ".ttf", ".otf", ".mp4", ".webm",
)
# The response headers _filter_headers reads or changes, by lower-case name.
_LENGTH, _TYPE, _SET_COOKIE, _VARY, _CSP, _ENCODING = range(6)
_RESPONSE_HEADERS = {
    b"content-length": _LENGTH,
    b"content-type": _TYPE,
    b"set-cookie": _SET_COOKIE,
    b"vary": _VARY,
    b"content-security-policy": _CSP,
    b"content-encoding": _ENCODING,
}
# HTML bodies larger than this are passed through without the banner rather than held in memory.
MAX_INJECT_BODY = 2 * 1024 * 1024


class ConsentMiddleware:
    """Puts ``scope["consent"]`` in place, filters Set-Cookie by consent, logs one visit per request.

    Use it inside a Starlette app (``Middleware(ConsentMiddleware, settings=...)``); it then opens
    and closes its own pipeline in the app's lifespan. ``ConsentGateway`` builds one around any
    ASGI app and shares its runtime with the ``/_consent`` routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        runtime: GatewayRuntime | None = None,
    ) -> None:
        if runtime is None:
            if settings is None:
                raise TypeError("ConsentMiddleware needs settings= or runtime=")
            runtime = GatewayRuntime(settings)
            self._owns_runtime = True
        else:
            self._owns_runtime = False
        self.app = app
        self.runtime = runtime
        s = runtime.settings
        self._settings = s
        self._cookie_name = s.cookie_name.encode("latin-1")
        self._prefix = s.prefix
        self._site = s.site_id
        self._inject_banner = s.inject_banner
        self._skip_assets = not s.log_visit_assets
        self._consent_for = runtime.consents.consent_for
        self._decide = runtime.policy.decide

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan" and self._owns_runtime:
                await lifespan_with_runtime(self.app, self.runtime, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        runtime = self.runtime
        if not runtime.started:
            await runtime.start()
        facts = RequestFacts(scope["headers"], self._cookie_name)
        consent, verified = self._consent_for(
            facts.consent_cookie, facts.gpc, runtime.policy_major(), facts.consent_alternatives
        )
        scope["consent"] = consent
        started = time.perf_counter()
        reissue = (
            runtime.consent_cookie.header(runtime.codec.encode(verified.record))
            if verified is not None and verified.stale_key
            else None
        )
        inject = self._inject_banner and scope.get("method") in ("GET", "HEAD")
        # What the response start said, read once by _filter_headers: status, html, csp, and where
        # its Content-Length stands (rewritten when a banner goes into the body).
        status = 0
        is_html = False
        csp = b""
        length_at = -1
        held: Message | None = None
        body: bytearray | None = None  # a held HTML body that came in more than one message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, is_html, csp, length_at, held, body
            mtype = message["type"]
            if mtype == "http.response.body":
                if held is None:
                    await send(message)
                    if not message.get("more_body", False):
                        self._record_visit(scope, facts, consent, is_html, status, started)
                    return
                chunk = message.get("body", b"")
                if message.get("more_body", False):
                    if body is None:
                        body = bytearray()
                    body.extend(chunk)
                    if len(body) <= MAX_INJECT_BODY:
                        return
                    # Too large to hold: let it stream on untouched from here.
                    start, held = held, None
                    await send(start)
                    await send({"type": "http.response.body", "body": bytes(body), "more_body": True})
                    body = None
                    return
                start, held = held, None
                if body is not None:
                    body.extend(chunk)
                    chunk = bytes(body)
                    body = None
                elif type(chunk) is not bytes:
                    chunk = bytes(chunk)
                new_body = runtime.banner.inject(chunk, consent, facts, scope, csp)
                _set_content_length(start, length_at, len(new_body))
                await send(start)
                await send({"type": "http.response.body", "body": new_body, "more_body": False})
                self._record_visit(scope, facts, consent, is_html, status, started)
                return
            if mtype == "http.response.start":
                status = message["status"]
                message["headers"], is_html, encoded, csp, length_at = self._filter_headers(
                    message.get("headers", []), consent, reissue
                )
                # 204, 205 and 304 responses carry no body: a banner there breaks the HTTP framing.
                if inject and is_html and not encoded and status not in (204, 205, 304):
                    held = message
                    return
                await send(message)
                return
            if held is not None:
                # A body the gateway cannot rewrite (http.response.pathsend of a FileResponse on
                # servers with that extension): the held start must still go out, unchanged.
                start, held = held, None
                await send(start)
            await send(message)
            if mtype == "http.response.pathsend":
                self._record_visit(scope, facts, consent, is_html, status, started)

        await self.app(scope, receive, send_wrapper)

    def _filter_headers(
        self,
        headers: list[tuple[bytes, bytes]],
        consent: Any,
        reissue: bytes | None,
    ) -> tuple[list[tuple[bytes, bytes]], bool, bool, bytes, int]:
        """The response headers as sent; whether the body is HTML and is encoded; the CSP; and the
        index of the Content-Length header (-1 without one, -2 when there are several)."""
        out: list[tuple[bytes, bytes]] = []
        vary_done = False
        is_html = False
        encoded = False
        csp = b""
        length_at = -1
        for key, value in headers:
            kind = _RESPONSE_HEADERS.get(key)
            if kind is None:
                kind = _RESPONSE_HEADERS.get(key.lower())
                if kind is None:  # a header the gateway leaves alone (most of them)
                    out.append((key, value))
                    continue
            if kind == _LENGTH:
                length_at = len(out) if length_at == -1 else -2
            elif kind == _TYPE:
                is_html = value[:9].lower() == b"text/html"
            elif kind == _SET_COOKIE:
                category_of = self.runtime.cookies.category_of
                if not all(consent.allows(category_of(name)) for name in set_cookie_names(value)):
                    continue
            elif kind == _VARY:
                # Compare whole tokens: "X-Cookie-Id" does not make the response vary on Cookie.
                tokens = {token.strip().lower() for token in value.split(b",")}
                if b"cookie" not in tokens and b"*" not in tokens:
                    value = value + b", Cookie"
                vary_done = True
            elif kind == _CSP:
                csp = value
            else:  # Content-Encoding
                encoded = value.strip().lower() not in (b"", b"identity")
            out.append((key, value))
        if not vary_done:
            out.append((b"vary", b"Cookie"))
        if reissue is not None:
            out.append((b"set-cookie", reissue))
        return out, is_html, encoded, csp, length_at

    def _record_visit(
        self,
        scope: Scope,
        facts: RequestFacts,
        consent: Consent,
        is_html: bool,
        status: int,
        started: float,
    ) -> None:
        path: str = scope.get("path", "/")
        if self._skip_assets and path.endswith(_ASSET_SUFFIXES):
            return
        user_agent = facts.user_agent
        decision = self._decide(VISIT, "", consent, user_agent)
        if decision is None:
            return
        runtime = self.runtime
        runtime.pipeline.submit(
            RawRecord(
                VISIT,
                "pageview" if is_html else "request",
                decision.category,
                decision.action,
                time.time(),
                self._site,
                facts.host,
                path,
                scope.get("query_string", b"").decode("latin-1"),
                facts.referer,
                user_agent,
                runtime.proxies.client_ip(scope, facts.forwarded_for),
                consent.consent_id if decision.identified else None,
                consent.categories,
                status,
                int((time.perf_counter() - started) * 1000),
            )
        )


def _set_content_length(message: Message, length_at: int, length: int) -> None:
    """Give the held response start the length of the body that replaces the app's."""
    headers = message["headers"]
    if length_at >= 0:
        headers[length_at] = (headers[length_at][0], b"%d" % length)
        return
    if length_at == -2:  # several Content-Length headers: keep none of them
        headers = message["headers"] = [h for h in headers if h[0].lower() != b"content-length"]
    headers.append((b"content-length", b"%d" % length))


async def lifespan_with_runtime(
    app: ASGIApp, runtime: GatewayRuntime, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run the wrapped app's lifespan with the runtime started before it and stopped after it.

    A runtime that cannot start fails the startup with its message (the server then exits) rather
    than leaving the app half-started. An app without lifespan support (it raises on the scope
    before reading it) still gets a working gateway: the protocol is then answered here.
    """
    seen_startup = False
    answered = False  # a startup.failed or shutdown message has gone out; nothing more to say

    async def wrapped_receive() -> Message:
        nonlocal seen_startup, answered
        message = await receive()
        if message["type"] == "lifespan.startup":
            seen_startup = True
            try:
                await runtime.start()
            except Exception as exc:
                answered = True
                await send({"type": "lifespan.startup.failed", "message": f"consent gateway: {exc}"})
                raise
        return message

    async def wrapped_send(message: Message) -> None:
        nonlocal answered
        mtype = message["type"]
        if mtype in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await runtime.stop()
            answered = True
        elif mtype == "lifespan.startup.failed":
            answered = True
        if answered and mtype == "lifespan.startup.complete":
            return
        await send(message)

    try:
        await app(scope, wrapped_receive, wrapped_send)
    except Exception:
        if answered:
            # The failure is reported; raising it too is what servers and test clients expect.
            raise
        if seen_startup:
            # The app failed in its own startup without saying so; report it and stop.
            await runtime.stop()
            await send({"type": "lifespan.startup.failed", "message": "the wrapped app failed to start"})
            return
        # The app does not speak lifespan: answer the protocol ourselves.
        await _own_lifespan(runtime, receive, send)


async def _own_lifespan(runtime: GatewayRuntime, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.start()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": f"consent gateway: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
