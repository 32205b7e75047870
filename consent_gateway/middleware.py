"""ConsentMiddleware: pure ASGI enforcement of the visitor's consent around a wrapped app."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .consent import ConsentStatus
from .cookies import set_cookie_names
from .pseudonymize import reduce_user_agent
from .records import RawRecord
from .runtime import GatewayRuntime
from .settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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


class RequestFacts:
    """The request headers the gateway reads, gathered in one pass over ``scope["headers"]``.

    Values stay bytes until they are read: a page reads the consent cookie on every request, the
    others only when a visit is logged or a banner has to pick a language.
    """

    __slots__ = (
        "_accept_language",
        "_cookies",
        "_forwarded_for",
        "_host",
        "_referer",
        "_user_agent",
        "consent_alternatives",
        "consent_cookie",
        "gpc",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]], cookie_name: bytes) -> None:
        if type(headers) is not list:
            headers = list(headers)
        # dict() reads the pairs in C; a name sent twice keeps its last value, as a loop would.
        found = dict(headers)
        cookie = found.get(b"cookie")
        if len(found) == len(headers):
            cookies = None if cookie is None else [cookie]
        else:  # a repeated header: every Cookie header counts, in order
            cookies = [value for key, value in headers if key == b"cookie"] or None
        consent_cookie: str | None = None
        alternatives: tuple[str, ...] = ()
        if cookies is not None:
            for value in cookies:
                if cookie_name in value:
                    for text in _cookie_values(value, cookie_name):
                        if consent_cookie is None:
                            consent_cookie = text
                        else:
                            # Further cg_consent values (a browser keeps one per domain/path after a
                            # cookie_domain change).
                            alternatives += (text,)
        self.consent_cookie = consent_cookie
        self.consent_alternatives = alternatives
        gpc = found.get(b"sec-gpc")
        self.gpc = gpc is not None and gpc.strip() == b"1"
        self._cookies = cookies
        self._user_agent = found.get(b"user-agent", b"")
        self._referer = found.get(b"referer", b"")
        self._host = found.get(b"host", b"")
        self._forwarded_for = found.get(b"x-forwarded-for", b"")
        self._accept_language = found.get(b"accept-language", b"")

    @property
    def cookie(self) -> str:
        """Every Cookie header of the request, joined with "; "."""
        joined = ""
        for value in self._cookies or ():
            text = value.decode("latin-1")
            joined = f"{joined}; {text}" if joined else text
        return joined

    @property
    def user_agent(self) -> str:
        return self._user_agent.decode("latin-1")

    @property
    def referer(self) -> str:
        return self._referer.decode("latin-1")

    @property
    def host(self) -> str:
        return self._host.decode("latin-1")

    @property
    def forwarded_for(self) -> str:
        return self._forwarded_for.decode("latin-1")

    @property
    def accept_language(self) -> str:
        return self._accept_language.decode("latin-1")


_COOKIE_PATTERNS: dict[bytes, re.Pattern[bytes]] = {}
_WHITESPACE = b" \t\n\r\x0b\x0c"


def _cookie_pattern(name: bytes) -> re.Pattern[bytes]:
    pattern = _COOKIE_PATTERNS.get(name)
    if pattern is None:
        # Starting with the name itself lets the engine jump from one occurrence to the next.
        pattern = _COOKIE_PATTERNS[name] = re.compile(re.escape(name) + b"[" + re.escape(_WHITESPACE) + b"]*=([^;]*)")
    return pattern


def _cookie_values(header: bytes, name: bytes) -> list[str]:
    """Values of every ``name`` pair in one Cookie header, whitespace and quotes stripped.

    The header reads as pairs split on ";" and then on the first "="; a pair is ``name``'s when
    its name, whitespace stripped, is exactly ``name``.
    """
    values = []
    for match in _cookie_pattern(name).finditer(header):
        at = match.start()
        # Only whitespace may stand between the pair's start (a ";" or the header's) and the name.
        if at and header[header.rfind(b";", 0, at) + 1 : at].strip(_WHITESPACE):
            continue
        values.append(match.group(1).strip().strip(b'"').decode("latin-1"))
    return values


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
        self._drop_bots = s.drop_bots

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
        consent, verified = runtime.consent_for(
            facts.consent_cookie, facts.gpc, runtime.policy_major(), facts.consent_alternatives
        )
        scope["consent"] = consent
        started = time.perf_counter()
        reissue = (
            runtime.consent_cookie_header(runtime.codec.encode(verified.record))
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
        consent: Any,
        is_html: bool,
        status: int,
        started: float,
    ) -> None:
        path: str = scope.get("path", "/")
        if self._skip_assets and path.endswith(_ASSET_SUFFIXES):
            return
        user_agent = facts.user_agent
        if self._drop_bots and reduce_user_agent(user_agent).is_bot:
            return  # crawlers and headless browsers are not visitors (SECURITY.md)
        runtime = self.runtime
        action = runtime.policy.decide_visit(consent)
        if action == "drop":
            return
        runtime.pipeline.submit(
            # By position (in RawRecord field order): keywords cost a page 7,000 instructions.
            RawRecord(
                "visit",  # kind
                "pageview" if is_html else "request",  # name
                "analytics",  # category
                action,  # action
                time.time(),  # ts
                self._site,  # site
                facts.host,  # host
                path,  # path
                scope.get("query_string", b"").decode("latin-1"),  # query
                facts.referer,  # referrer
                user_agent,  # user_agent
                runtime.client_ip(scope, facts.forwarded_for),  # ip
                consent.consent_id if consent.status is ConsentStatus.GIVEN else None,  # consent_id
                consent.categories,  # granted
                status,  # status
                int((time.perf_counter() - started) * 1000),  # duration_ms
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
