"""ConsentMiddleware: pure ASGI enforcement of the visitor's consent around a wrapped app."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from itertools import chain
from typing import Any

from . import compression
from .asgi import ASGIApp, Message, Receive, Scope, Send
from .compression import Codec, Decoder, content_codings
from .cookies import set_cookie_names
from .inject import HtmlInjector, UnsupportedCharset, charset_of, encode_markup, meta_charset, place_at_start
from .limits import header_bytes, send_headers_too_large, send_rate_limited
from .policy import VISIT
from .ratelimit import RateLimited
from .records import Location, RawRecord, Visitor
from .request import RequestFacts
from .runtime import GatewayRuntime
from .settings import Settings

_ASSET_SUFFIXES = (
    ".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".avif",
    ".ico", ".woff", ".woff2", ".ttf", ".otf", ".mp4", ".webm",
)
# The response headers _filter_headers reads or changes, by lower-case name.
_LENGTH, _TYPE, _SET_COOKIE, _VARY, _CSP, _ENCODING, _ETAG = range(7)
_RESPONSE_HEADERS = {
    b"content-length": _LENGTH,
    b"etag": _ETAG,
    b"content-type": _TYPE,
    b"set-cookie": _SET_COOKIE,
    b"vary": _VARY,
    b"content-security-policy": _CSP,
    b"content-encoding": _ENCODING,
}
# An app answers page after page with the same headers: a response start without Set-Cookie (the
# only header whose filtering depends on the visitor) is filtered once and kept, at most
# START_CACHE_SIZE of them with at most START_CACHE_BYTES of names and values each (512 KiB).
START_CACHE_SIZE = 256
START_CACHE_BYTES = 2048
# A page that starts with one of these byte order marks is UTF-16: no ASCII tags to place a banner among.
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
logger = logging.getLogger("consent_gateway.middleware")


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
        routes: ASGIApp | None = None,
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
        self._cookie_name = runtime.cookie_name.encode("latin-1")
        self._prefix = s.prefix
        # HTTP requests under the prefix go to these routes (ConsentGateway's), in the same call.
        self._routes = routes
        self._prefix_slash = s.prefix + "/"
        self._site = s.site_id
        self._inject_banner = s.inject_banner
        self._skip_assets = not s.log_visit_assets
        self._consent_for = runtime.consents.consent_for
        self._decide = runtime.policy.decide
        self._max_header_bytes = s.max_header_bytes
        self._client_ip = runtime.proxies.client_ip
        self._check_rate = runtime.rate_limits.check
        self._policy_major = runtime.policy_major
        self._child_guard = runtime.child_guard
        self._banner = runtime.banner
        self._inventory = runtime.inventory
        self._category_of = runtime.cookies.category_of
        self._starts: dict[tuple[tuple[bytes, bytes], ...], tuple[Sequence[tuple[bytes, bytes]], _StartFacts]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            routes = self._routes
            if routes is not None:
                path: str = scope["path"]
                if path == self._prefix or path.startswith(self._prefix_slash):
                    await routes(scope, receive, send)
                    return
        elif kind != "websocket":  # a handshake gets consent and its Set-Cookie filtered, like a response
            if kind == "lifespan" and self._owns_runtime:
                await lifespan_with_runtime(self.app, self.runtime, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        runtime = self.runtime
        size = header_bytes(scope)
        if size > self._max_header_bytes:
            await send_headers_too_large(scope, send, size, self._max_header_bytes)
            return
        if not runtime.started:
            await runtime.start()
        facts = RequestFacts(scope["headers"], self._cookie_name)
        ip: str | None = None  # worked out once a request: for the page limit and the visit record
        if kind == "http" and not scope["path"].endswith(_ASSET_SUFFIXES):
            ip = self._client_ip(scope, facts.forwarded_for)
            try:
                self._check_rate("page", ip)
            except RateLimited as exc:
                await send_rate_limited(scope, send, exc)
                return
        consent, verified = self._consent_for(
            facts.consent_cookie, facts.gpc, self._policy_major(), facts.consent_alternatives
        )
        cookies = facts.cookie_headers
        # A child's behavioural categories refused.
        consent = self._child_guard.on_request(scope, consent, () if cookies is None else cookies)
        scope["consent"] = consent
        if cookies is not None:  # the inventory counts the names browsers send back, under this consent
            for value in cookies:
                self._inventory.observe_cookie_header(value, consent.categories)
        started = time.perf_counter()
        reissue = runtime.reissue_header(verified) if verified is not None and verified.stale_key else None
        responder = _Responder(self, scope, send, facts, consent, reissue, started, ip)
        await self.app(scope, receive, responder.send if kind == "http" else responder.send_websocket)

    def _known_start(self, raw: list[tuple[bytes, bytes]]) -> tuple[Sequence[tuple[bytes, bytes]], _StartFacts] | None:
        """The headers (to be copied before they are sent) and facts of a response start seen before
        with exactly these headers, which held no Set-Cookie and no child mark: nothing in them
        depends on the visitor."""
        try:
            return self._starts.get(tuple(raw))
        except TypeError:  # a header given as a list or bytearray: nothing to key on
            return None

    def _response_headers(
        self, raw: list[tuple[bytes, bytes]], consent: Any, reissue: bytes | None, path: str, keep: bool
    ) -> tuple[list[tuple[bytes, bytes]], _StartFacts]:
        """``_filter_headers`` of a response start, kept for the next start with the same headers
        when ``keep`` (the child guard left them as the app sent them)."""
        headers, start = self._filter_headers(raw, consent, reissue, path)
        if (
            keep
            and reissue is None
            and not start.cookies
            and sum(map(len, chain.from_iterable(raw))) <= START_CACHE_BYTES
            and not any(b"nonce-" in value for value in start.csp)  # new on every response: no use keeping
        ):
            starts = self._starts
            while len(starts) >= START_CACHE_SIZE:
                try:
                    del starts[next(iter(starts))]  # the oldest
                except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                    break
            try:
                starts[tuple(raw)] = (tuple(headers), start)
            except TypeError:  # unhashable: not kept
                pass
        return headers, start

    def _filter_headers(
        self,
        headers: list[tuple[bytes, bytes]],
        consent: Any,
        reissue: bytes | None,
        path: str = "",
        websocket: bool = False,
    ) -> tuple[list[tuple[bytes, bytes]], _StartFacts]:
        """The response headers as sent (refused Set-Cookie removed, Vary: Cookie added), and what
        they say about the body. Each Set-Cookie is counted in the cookie inventory, as kept or removed."""
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
                start.length_at = len(out)
            elif kind == _TYPE:
                start.content_type = value
            elif kind == _SET_COOKIE:
                start.cookies = True
                category_of = self._category_of
                # Kept only when every name it may be read under is allowed.
                allowed = all(consent.allows(category_of(name)) for name in set_cookie_names(value))
                self._inventory.observe_set_cookie(value, path=path, granted=allowed, blocked=not allowed)
                if not allowed:
                    continue
            elif kind == _VARY:
                # Compare whole tokens: "X-Cookie-Id" does not make the response vary on Cookie.
                tokens = {token.strip().lower() for token in value.split(b",")}
                if b"cookie" not in tokens and b"*" not in tokens:
                    value = value + b", Cookie"
                vary_done = True
            elif kind == _CSP:
                start.csp.append(value)
            elif kind == _ENCODING:  # every header counts, as the list it is
                start.encodings.append(value)
            else:  # ETag: made weak if the gateway changes the body
                start.etag = True
            out.append((key, value))
        if not vary_done:
            out.append((b"vary", b"Cookie"))
        if reissue is not None:
            out.append((b"set-cookie", reissue))
        start.is_html = is_html = start.content_type[:9].lower() == b"text/html"
        start.pageable = is_html and start.length not in (b"0", b"several")
        return out, start


class _StartFacts:
    """What a response start says about its body, read while its headers are filtered."""

    __slots__ = (
        "content_type",
        "cookies",
        "csp",
        "encodings",
        "etag",
        "is_html",
        "length",
        "length_at",
        "pageable",
        "plan",
        "planned",
    )

    def __init__(self) -> None:
        self.content_type = b""
        self.length: bytes | None = None  # the Content-Length value, b"several" for conflicting ones
        self.csp: list[bytes] = []
        self.encodings: list[bytes] = []
        self.etag = False
        self.cookies = False  # a Set-Cookie came: the filtered headers depend on the visitor's consent
        self.length_at = 0  # where the (last) Content-Length header stands in the filtered headers
        # How an HTML body would be changed (see _page_plan), worked out once for a kept start.
        self.plan: tuple[list[bytes], str | None, tuple[tuple[bytes, bytes], ...]] | None = None
        self.planned = False
        self.is_html = False  # by the Content-Type, once the headers are read
        self.pageable = False  # HTML with a body the banner may go into (a length neither 0 nor conflicting)


def _page_plan(
    start: _StartFacts, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[list[bytes], str | None, tuple[tuple[bytes, bytes], ...]] | None:
    """The body's codings and charset and the start's headers for a changed body, when the
    gateway can change it; None when it is passed on as it is: stacked or unknown codings, or a
    charset that is not ASCII-compatible."""
    codings = content_codings(start.encodings) if start.encodings else []
    if len(codings) > 1 or (codings and not compression.supported(codings[0])):
        return None
    try:
        charset = charset_of(start.content_type)
    except UnsupportedCharset:
        return None
    return codings, charset, tuple(_changed_body_headers(list(headers), start))


# Statuses whose HTML is a page a visitor reads: the banner goes there and nowhere else (not into
# 206 ranges, redirects' stubs, 1xx, 204 or 304).
def _page_status(status: int) -> bool:
    return status == 200 or 400 <= status <= 599


def _changed_body_headers(headers: list[tuple[bytes, bytes]], start: _StartFacts) -> list[tuple[bytes, bytes]]:
    """Headers for a body the gateway changes as it streams: no Content-Length (the server frames
    the body itself), and a strong ETag made weak (the bytes differ from the app's)."""
    if not start.etag:
        if start.length is None:
            return headers  # right for the changed body as they are
        if start.length != b"several":  # one Content-Length header: the list without it
            at = start.length_at
            return headers[:at] + headers[at + 1 :]
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

    # Per-response state a page needs only once it is changed: class defaults until set, so a
    # response that is passed on as it is sets none of them.
    status = 0
    is_html = False
    _held: Message | None = None  # a page's start, sent with the page's first bytes
    _changed: tuple[tuple[bytes, bytes], ...] = ()  # the held start's headers once the body changes
    _charset: str | None = None  # the page's charset by its Content-Type, once it is a page
    _markup: tuple[bytes, bytes] | None = None  # a page's head script and assets, while it is changed
    _injector: HtmlInjector | None = None  # made for a page that comes in several parts
    _decoder: Decoder | None = None
    _encoder: Codec | None = None
    _failed = False  # the body stopped decoding: the rest of the app's body is dropped

    def __init__(
        self,
        gateway: ConsentMiddleware,
        scope: Scope,
        send: Send,
        facts: RequestFacts,
        consent: Any,
        reissue: bytes | None,
        started: float,
        ip: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.ip = ip
        self.scope = scope
        self.send_on = send
        self.facts = facts
        self.consent = consent
        self.reissue = reissue
        self.started = started

    def __repr__(self) -> str:
        injecting = self._markup is not None
        return f"_Responder(path={self.scope.get('path')!r}, status={self.status}, injecting={injecting})"

    async def send(self, message: Message) -> None:
        mtype = message["type"]
        if mtype == "http.response.body":
            if self._markup is not None:
                if self._held is not None and self._decoder is None and not message.get("more_body", False):
                    await self._whole_page(message)  # most pages: one message, not compressed
                else:
                    await self._page_body(message)
                return
            await self.send_on(message)
            if not message.get("more_body", False):
                self._done()
            return
        if mtype == "http.response.start":
            start = self._start(message)
            if start is not None:
                await self.send_on(start)
            return
        if self._held is not None:
            # A body the gateway cannot rewrite (http.response.pathsend of a FileResponse on
            # servers with that extension): the held start goes out as the app made it.
            held, self._held, self._markup = self._held, None, None
            await self.send_on(held)
        await self.send_on(message)
        if mtype == "http.response.pathsend":
            self._done()

    async def send_websocket(self, message: Message) -> None:
        """A WebSocket's accept (or the HTTP response that denies it, with the ASGI extension for
        that) has its Set-Cookie headers filtered exactly like a response's."""
        mtype = message["type"]
        if mtype in ("websocket.accept", "websocket.http.response.start"):
            given = list(message.get("headers") or [])
            # A child mark on the handshake is consumed as on any response, never passed on.
            raw, self.consent = self.gateway.runtime.child_guard.on_response(self.scope, given, self.consent)
            if raw or given or self.reissue is not None:
                path = self.scope.get("path", "")
                message["headers"], _ = self.gateway._filter_headers(
                    raw, self.consent, self.reissue, path, websocket=True
                )
        await self.send_on(message)

    def _done(self) -> None:
        """The response is over: its visit record goes to the pipeline, when the policy keeps one."""
        gateway = self.gateway
        scope = self.scope
        path: str = scope.get("path", "/")
        if gateway._skip_assets and path.endswith(_ASSET_SUFFIXES):
            return
        facts = self.facts
        consent = self.consent
        user_agent = facts.user_agent
        decision = gateway._decide(VISIT, "", consent, user_agent)
        if decision is None:
            return
        ip = self.ip
        if ip is None:
            ip = gateway._client_ip(scope, facts.forwarded_for)
        gateway.runtime.pipeline.submit(
            # By position (in RawRecord field order): keywords cost a page 7,000 instructions.
            RawRecord(
                VISIT,  # kind
                "pageview" if self.is_html else "request",  # name
                decision.category,  # category
                decision.action,  # action
                decision.consent_id(consent),  # consent_id
                time.time(),  # ts
                gateway._site,  # site
                Visitor(user_agent, ip, consent.categories),  # visitor
                Location(facts.host, path, scope.get("query_string", b"").decode("latin-1"), facts.referer),
                self.status,  # status
                int((time.perf_counter() - self.started) * 1000),  # duration_ms
            )
        )

    def _start(self, message: Message) -> Message | None:
        """The response start with its headers filtered, to send now; None when it is a page's
        start, held until the page's first bytes say whether the banner goes in."""
        gateway = self.gateway
        self.status = status = message["status"]
        given = message.get("headers", [])
        scope = self.scope
        known = None
        if self.reissue is None and not gateway._child_guard.marked_by_call(scope):
            known = gateway._known_start(given)
        if known is None:
            # The app may mark a child in this very response (X-Consent-Child or mark_child).
            raw, self.consent = gateway._child_guard.on_response(scope, given, self.consent)
            known = gateway._response_headers(raw, self.consent, self.reissue, scope.get("path", ""), raw is given)
        headers, start = known
        self.is_html = start.is_html
        method = scope.get("method")
        if not (start.pageable and gateway._inject_banner and method in ("GET", "HEAD") and _page_status(status)):
            message["headers"] = list(headers)
            return message
        if not start.planned:
            start.plan, start.planned = _page_plan(start, headers), True
        plan = start.plan
        if plan is None:  # stacked or unknown codings, or a charset the banner cannot be written in
            message["headers"] = list(headers)
            return message
        codings, charset, changed = plan
        if method == "HEAD":
            # The headers a GET of the same page gets, without reading a body there is none of.
            message["headers"] = list(changed)
            return message
        message["headers"] = list(headers)  # as the app made them, should the page be passed on unchanged
        self._changed = changed
        self._markup = gateway._banner.asset_markup(self.consent, start.csp)
        self._charset = charset
        if codings:
            self._decoder = compression.decoder(codings[0])
            self._encoder = compression.encoder(codings[0])
        self._held = message
        return None

    def _render_banner(self, page_start: bytes) -> bytes:
        """The banner root in the page's charset: the header's, else a ``<meta>`` one in its first bytes."""
        root = self.gateway._banner.root_html(self.consent, self.facts, self.scope, page_start)
        codec = self._charset or meta_charset(page_start)
        if codec is None or codec in ("utf-8", "utf_8"):
            return root if codec else encode_markup(root.decode("utf-8"), None)
        return encode_markup(root.decode("utf-8"), codec)

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
        injector = self._injector or self._new_injector()
        encoder = self._encoder
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

    async def _whole_page(self, message: Message) -> None:
        """The page in one uncompressed message (most pages): read and sent on at once, as the
        streaming path would send it."""
        page = message.get("body", b"")
        if not page or self._failed or page[:2] in _UTF16_MARKS:
            # No page to change (or no more to send), or one the banner cannot go into: as streamed.
            await self._page_body(message)
            return
        if type(page) is not bytes:
            page = bytes(page)
        held = self._held
        assert held is not None and self._markup is not None
        self._held = None
        held["headers"] = list(self._changed)
        await self.send_on(held)
        placed = place_at_start(page, *self._markup, self._render_banner)
        if placed is not None:
            out = placed[0]
        else:  # a page of another shape: read tag by tag
            injector = self._injector or self._new_injector()
            out = injector.feed(page)
            tail = injector.finish()
            out = out + tail if tail else out
        await self.send_on({"type": "http.response.body", "body": out, "more_body": False})
        self._done()

    def _new_injector(self) -> HtmlInjector:
        assert self._markup is not None
        self._injector = injector = HtmlInjector(*self._markup, self._render_banner)
        return injector

    async def _first_bytes(self, page: bytes, message: Message) -> bool:
        """Send the held start, changed for the banner, unless the page's first bytes rule it out."""
        held = self._held
        assert held is not None
        if page[:2] in _UTF16_MARKS:
            # A UTF-16 page (byte order mark): no ASCII tag syntax to put the banner into.
            self._decoder = self._encoder = None
            await self._pass_unchanged(message)
            return False
        self._held = None
        held["headers"] = list(self._changed)
        await self.send_on(held)
        return True

    async def _pass_unchanged(self, message: Message) -> None:
        """Give up on the banner for this response: the start and the rest go on as the app made them."""
        held, self._held, self._markup = self._held, None, None
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
