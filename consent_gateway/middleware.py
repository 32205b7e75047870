"""ConsentMiddleware: pure ASGI enforcement of the visitor's consent around a wrapped app."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import compression
from .compression import Codec, Decoder, content_codings
from .consent import ConsentStatus
from .cookies import set_cookie_names
from .inject import HtmlInjector, UnsupportedCharset, charset_of, encode_markup, meta_charset
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
logger = logging.getLogger("consent_gateway.middleware")


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
        if kind != "http" and kind != "websocket":
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
        responder = _Responder(self, scope, send, facts, consent, reissue, started)
        await self.app(scope, receive, responder.send if kind == "http" else responder.send_websocket)

    def _filter_headers(
        self,
        headers: list[tuple[bytes, bytes]],
        consent: Any,
        reissue: bytes | None,
        websocket: bool = False,
    ) -> tuple[list[tuple[bytes, bytes]], _StartFacts]:
        """The response headers as sent (refused Set-Cookie removed, Vary: Cookie added), and what
        they say about the body."""
        out: list[tuple[bytes, bytes]] = []
        start = _StartFacts()
        vary_done = websocket  # a handshake's answer is not cached: no Vary to add
        for key, value in headers:
            kind = _RESPONSE_HEADERS.get(key)
            if kind is None:
                kind = _RESPONSE_HEADERS.get(key.lower())
                if kind is None:  # a header the gateway leaves alone (most of them)
                    out.append((key, value))
                    continue
            if kind == _LENGTH:
                start.length = value.strip() if start.length is None else b"several"
            elif kind == _TYPE:
                start.content_type = value
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
                start.csp.append(value)
            else:  # Content-Encoding: every header counts, as the list it is
                start.encodings.append(value)
            out.append((key, value))
        if not vary_done:
            out.append((b"vary", b"Cookie"))
        if reissue is not None:
            out.append((b"set-cookie", reissue))
        return out, start

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
            RawRecord(
                "visit",
                "pageview" if is_html else "request",
                "analytics",
                action,
                time.time(),
                self._site,
                facts.host,
                path,
                scope.get("query_string", b"").decode("latin-1"),
                facts.referer,
                user_agent,
                runtime.client_ip(scope, facts.forwarded_for),
                consent.consent_id if consent.status is ConsentStatus.GIVEN else None,
                consent.categories,
                status,
                int((time.perf_counter() - started) * 1000),
            )
        )


class _StartFacts:
    """What a response start says about its body, read while its headers are filtered."""

    __slots__ = ("content_type", "csp", "encodings", "length")

    def __init__(self) -> None:
        self.content_type = b""
        self.length: bytes | None = None  # the Content-Length value, b"several" for conflicting ones
        self.csp: list[bytes] = []
        self.encodings: list[bytes] = []

    @property
    def is_html(self) -> bool:
        return self.content_type[:9].lower() == b"text/html"


# Statuses whose HTML is a page a visitor reads: the banner goes there and nowhere else (not into
# 206 ranges, redirects' stubs, 1xx, 204 or 304).
def _page_status(status: int) -> bool:
    return status == 200 or 400 <= status <= 599


def _changed_body_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers for a body the gateway changes as it streams: no Content-Length (the server frames
    the body itself), and a strong ETag made weak (the bytes differ from the app's)."""
    out = []
    for key, value in headers:
        name = key.lower()
        if name == b"content-length":
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            value = b"W/" + value
        out.append((key, value))
    return out


class _Responder:
    """One response on its way out: filters its headers and, for a page, streams the banner into it.

    Per-request state lives here (as in Starlette's GZip responder), never on the middleware.
    """

    __slots__ = (
        "_changed",
        "_decoder",
        "_encoder",
        "_failed",
        "_held",
        "_injector",
        "consent",
        "facts",
        "gateway",
        "is_html",
        "reissue",
        "scope",
        "send_on",
        "started",
        "status",
    )

    def __init__(
        self,
        gateway: ConsentMiddleware,
        scope: Scope,
        send: Send,
        facts: RequestFacts,
        consent: Any,
        reissue: bytes | None,
        started: float,
    ) -> None:
        self.gateway = gateway
        self.scope = scope
        self.send_on = send
        self.facts = facts
        self.consent = consent
        self.reissue = reissue
        self.started = started
        self.status = 0
        self.is_html = False
        self._held: Message | None = None  # a page's start, sent with the page's first bytes
        self._changed: list[tuple[bytes, bytes]] = []  # the held start's headers once the body changes
        self._injector: HtmlInjector | None = None
        self._decoder: Decoder | None = None
        self._encoder: Codec | None = None
        self._failed = False  # the body stopped decoding: the rest of the app's body is dropped

    def __repr__(self) -> str:
        injecting = self._injector is not None
        return f"_Responder(path={self.scope.get('path')!r}, status={self.status}, injecting={injecting})"

    async def send(self, message: Message) -> None:
        mtype = message["type"]
        if mtype == "http.response.body":
            if self._injector is not None:
                await self._page_body(message)
                return
            await self.send_on(message)
            if not message.get("more_body", False):
                self._done()
            return
        if mtype == "http.response.start":
            await self._start(message)
            return
        if self._held is not None:
            # A body the gateway cannot rewrite (http.response.pathsend of a FileResponse on
            # servers with that extension): the held start goes out as the app made it.
            held, self._held, self._injector = self._held, None, None
            await self.send_on(held)
        await self.send_on(message)
        if mtype == "http.response.pathsend":
            self._done()

    async def send_websocket(self, message: Message) -> None:
        """A WebSocket's accept (or the HTTP response that denies it, with the ASGI extension for
        that) has its Set-Cookie headers filtered exactly like a response's."""
        mtype = message["type"]
        if mtype in ("websocket.accept", "websocket.http.response.start") and (
            message.get("headers") or self.reissue is not None
        ):
            message["headers"], _ = self.gateway._filter_headers(
                list(message.get("headers") or []), self.consent, self.reissue, websocket=True
            )
        await self.send_on(message)

    def _done(self) -> None:
        self.gateway._record_visit(self.scope, self.facts, self.consent, self.is_html, self.status, self.started)

    async def _start(self, message: Message) -> None:
        gateway = self.gateway
        self.status = status = message["status"]
        headers, start = gateway._filter_headers(message.get("headers", []), self.consent, self.reissue)
        message["headers"] = headers
        self.is_html = start.is_html
        method = self.scope.get("method")
        if not (
            gateway._inject_banner
            and start.is_html
            and method in ("GET", "HEAD")
            and _page_status(status)
            and start.length not in (b"0", b"several")
        ):
            await self.send_on(message)
            return
        codings = content_codings(start.encodings)
        if len(codings) > 1 or (codings and not compression.supported(codings[0])):
            await self.send_on(message)  # stacked or unknown codings: passed on as they are
            return
        try:
            charset = charset_of(start.content_type)
        except UnsupportedCharset:
            await self.send_on(message)
            return
        changed = _changed_body_headers(headers)
        if method == "HEAD":
            # The headers a GET of the same page gets, without reading a body there is none of.
            message["headers"] = changed
            await self.send_on(message)
            return
        banner = gateway.runtime.banner
        head_script, assets = banner.asset_tags(self.consent, start.csp)
        consent, facts, scope = self.consent, self.facts, self.scope

        def render_banner(page_start: bytes) -> bytes:
            root = banner.root_html(consent, facts, scope, page_start)
            codec = charset or meta_charset(page_start)
            if codec is None or codec in ("utf-8", "utf_8"):
                return root if codec else encode_markup(root.decode("utf-8"), None)
            return encode_markup(root.decode("utf-8"), codec)

        self._injector = HtmlInjector(encode_markup(head_script, None), encode_markup(assets, None), render_banner)
        if codings:
            self._decoder = compression.decoder(codings[0])
            self._encoder = compression.encoder(codings[0])
        self._held = message
        self._changed = changed

    async def _page_body(self, message: Message) -> None:
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if self._failed:
            return
        if self._held is not None and not chunk:
            if not more:
                await self._pass_unchanged(message)  # an empty body gets no banner
            return  # otherwise the page's first bytes decide; none has come yet
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        pieces = (chunk,) if self._decoder is None else self._decoder.pieces(chunk, not more)
        injector = self._injector
        encoder = self._encoder
        assert injector is not None
        pending = b""  # the last piece's output, sent with the app's more_body
        try:
            for page in pieces:
                if self._held is not None and not await self._first_bytes(page, message):
                    return
                if pending:
                    await self.send_on({"type": "http.response.body", "body": pending, "more_body": True})
                out = injector.feed(page)
                pending = encoder.feed(out) if encoder is not None and out else out
        except compression.DecodeError as exc:
            if self._held is not None:
                await self._pass_unchanged(message)  # not what its Content-Encoding says: left alone
                return
            logger.warning("page %s: %s; the response ends here", self.scope.get("path"), exc)
            self._failed = True
            tail = encoder.finish() if encoder is not None else b""
            await self.send_on({"type": "http.response.body", "body": pending + tail, "more_body": False})
            self._done()
            return
        if self._held is not None and not await self._first_bytes(b"", message):
            return
        if not more:
            tail = injector.finish()
            if encoder is not None:
                tail = (encoder.feed(tail) if tail else b"") + encoder.finish()
            pending += tail
        if pending or not more:
            await self.send_on({"type": "http.response.body", "body": pending, "more_body": more})
        if not more:
            self._done()

    async def _first_bytes(self, page: bytes, message: Message) -> bool:
        """Send the held start, changed for the banner, unless the page's first bytes rule it out."""
        held = self._held
        assert held is not None
        if page[:2] in (b"\xff\xfe", b"\xfe\xff"):
            # A UTF-16 page (byte order mark): no ASCII tag syntax to put the banner into.
            self._decoder = self._encoder = None
            await self._pass_unchanged(message)
            return False
        self._held = None
        held["headers"] = self._changed
        await self.send_on(held)
        return True

    async def _pass_unchanged(self, message: Message) -> None:
        """Give up on the banner for this response: the start and the rest go on as the app made them."""
        held, self._held, self._injector = self._held, None, None
        if held is not None:
            await self.send_on(held)
        await self.send_on(message)
        if not message.get("more_body", False):
            self._done()


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
