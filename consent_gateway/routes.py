"""The gateway's own routes under the prefix: state, choose, withdraw, receipts, collect, static."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from .asgi import Receive, Scope, Send
from .assets import static_dir
from .banner import SETTINGS_LINKS, choose_locale, safe_return_path
from .children import GUARDIAN_METHOD, receipt_fields, refused_for_child, restrict_consent
from .children import NOTICE as CHILD_NOTICE
from .consent import Consent, ConsentRecord, ConsentStatus, Method
from .cookies import expire_headers, request_cookie_names
from .declaration import CookieDeclarationEndpoint
from .errors import RequestError, StoreError
from .inventory import read_inventory
from .limits import header_bytes, send_headers_too_large
from .my_data import MyDataEndpoint, Visitor
from .pipeline.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .policy import EVENT, VISIT, Decision, banner_hash
from .pseudonymize import split_url
from .ratelimit import RateLimited
from .records import (
    LINK,
    CollectedEvents,
    EventFields,
    Location,
    RawRecord,
    ReceiptRecord,
    ValidEvent,
    parse_collect_body,
    props_text,
)
from .records import Visitor as RecordVisitor  # the who of a record; my_data.Visitor asks for its data
from .registry import Source
from .request import RequestFacts
from .runtime import GatewayRuntime
from .store.statements import ping, receipts_of

logger = logging.getLogger("consent_gateway.routes")
MAX_CHOICE_BODY = 16_384
# At most this many deletion Set-Cookie headers in one answer: a request carrying thousands of
# cookies must not make a response many times its own size.
MAX_DELETIONS = 64
# Unclassified cookie names longer than this are never echoed back in a deletion.
DELETED_NAME_MAX = 128
# How long a choice or /collect body may take to arrive when no setting says (collect_body_timeout).
BODY_TIMEOUT = 10.0
ERASE_TIMEOUT = 30.0
READY_PROBE_TIMEOUT = 2.0
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    # The gateway's pages load only its own stylesheet and post only to itself.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_PAGE_CSP = "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
# Routes with a per-client token bucket (settings rate_limit_*): what a flood could make expensive.
_LIMITED = {
    ("POST", "/collect"): "collect",
    ("POST", "/"): "consent",
    ("POST", "/withdraw"): "consent",
    ("GET", "/receipts"): "consent",
}
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# What MutableHeaders.setdefault appends to an answer that has none of them (the /collect answers).
_SECURITY_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _SECURITY_HEADERS.items()]
# The request headers /collect reads before the body, first value of each (as Request.headers.get).
_COLLECT_HEADERS = frozenset(
    {b"x-forwarded-for", b"host", b"sec-fetch-site", b"origin", b"referer", b"content-type", b"content-length"}
)
Handler = Callable[[GatewayRuntime, Request], Awaitable[Response]]


class ConsentRoutes:
    """Dispatches requests under the prefix to their handlers; every error is a 4xx with a message."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self.runtime = runtime
        self.prefix = runtime.settings.prefix
        self._cookie_name = runtime.cookie_name.encode("latin-1")
        self._static = static_dir()
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/state"): state,
            ("GET", "/"): settings_page,
            ("POST", "/"): choose,
            ("POST", "/withdraw"): withdraw,
            ("GET", "/receipts"): receipts,
            ("GET", "/healthz"): healthz,
            ("GET", "/readyz"): readyz,
            ("GET", "/metrics"): metrics,
            ("GET", "/cookies"): self._declaration(runtime),
            ("GET", "/my-data"): self._my_data(runtime),
        }
        # POST /collect is answered before this table (see _collect); other methods on it get 405.
        self._paths = frozenset({p for _, p in self._routes} | {"/collect"})

    def __repr__(self) -> str:
        return f"ConsentRoutes(prefix={self.prefix!r})"

    @staticmethod
    def _declaration(runtime: GatewayRuntime) -> Handler:
        """GET /cookies: the public cookie declaration, from the registry, catalogue and inventory."""
        s = runtime.settings
        endpoint = CookieDeclarationEndpoint(
            s, runtime.inventory.classifier, lambda: read_inventory(runtime.store(), s.site_id)
        )
        return lambda _runtime, request: endpoint.handle(request)

    @staticmethod
    def _my_data(runtime: GatewayRuntime) -> Handler:
        """GET /my-data: what is held for the visitor's consent id, identified as the other routes do."""

        def identify(request: Request) -> Visitor:
            facts = facts_of(runtime, request)
            ip = runtime.proxies.client_ip(request.scope, facts.forwarded_for)
            return Visitor(consent_of(runtime, facts).consent_id, ip, facts.user_agent)

        endpoint = MyDataEndpoint(
            runtime.settings,
            runtime.salts,
            runtime.store,
            identify,
            before_read=lambda: runtime.pipeline.flush(10.0),
        )
        return lambda _runtime, request: endpoint.handle(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = header_bytes(scope)
        if size > self.runtime.settings.max_header_bytes:
            await send_headers_too_large(scope, send, size, self.runtime.settings.max_header_bytes)
            return
        sub = scope["path"][len(self.prefix):] or "/"
        method = scope["method"]
        if sub == "/collect" and method == "POST":
            # The busiest route by far: read straight from the ASGI scope, without a Request.
            await self._collect(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if not self.runtime.started:
                await self.runtime.start()
            if sub.startswith("/static/") and method in ("GET", "HEAD"):
                response = self._static_file(sub[len("/static/"):])
            else:
                handler = self._routes.get(("GET" if method == "HEAD" else method, sub))
                if handler is None:
                    if sub in self._paths:
                        raise RequestError(f"{method} is not allowed on {self.prefix}{sub}", status=405)
                    raise RequestError(f"no gateway route {self.prefix}{sub}", status=404)
                bucket = _LIMITED.get(("GET" if method == "HEAD" else method, sub))
                ip = ""
                if bucket is not None:
                    ip = self.runtime.proxies.client_ip(scope, request.headers.get("x-forwarded-for", ""))
                    self.runtime.rate_limits.peek(bucket, ip)
                if method == "POST":
                    check_same_origin(request, self.runtime.settings.allowed_origins)
                if bucket is not None:
                    # Charged only once the origin passed: a refused cross-site POST costs the visitor nothing.
                    self.runtime.rate_limits.charge(bucket, ip)
                response = await handler(self.runtime, request)
        except (RequestError, StoreError) as exc:
            response = _error_response(exc, sub)
        except ClientDisconnect:
            return
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        await response(scope, receive, send)

    async def _collect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /collect, read straight from the ASGI scope: the checks of every POST route, in the same order."""
        runtime = self.runtime
        try:
            if not runtime.started:
                await runtime.start()
            facts = RequestFacts(scope["headers"], self._cookie_name)
            first = facts.first_values(_COLLECT_HEADERS)
            forwarded_for = first.get(b"x-forwarded-for", b"").decode("latin-1")
            ip = runtime.proxies.client_ip(scope, forwarded_for)
            runtime.rate_limits.peek("collect", ip)
            _check_origin(
                first.get(b"host", b"").decode("latin-1"),
                _text_or_none(first.get(b"sec-fetch-site")),
                _text_or_none(first.get(b"origin")),
                _text_or_none(first.get(b"referer")),
                runtime.settings.allowed_origins,
            )
            runtime.rate_limits.charge("collect", ip)
            answer = await accept_events(
                runtime,
                scope,
                receive,
                first.get(b"content-type", b"").decode("latin-1"),
                _text_or_none(first.get(b"content-length")),
                facts,
                # The record's address reads the last X-Forwarded-For (RequestFacts), the limit's the
                # first; they are one header on all but odd requests.
                ip if forwarded_for == facts.forwarded_for else runtime.proxies.client_ip(scope, facts.forwarded_for),
            )
        except (RequestError, StoreError) as exc:
            response = _error_response(exc, "/collect")
            for key, text in _SECURITY_HEADERS.items():
                response.headers.setdefault(key, text)
            await response(scope, receive, send)
            return
        except ClientDisconnect:
            return
        # The bytes and headers a JSONResponse(status_code=202) with the security headers would send.
        headers = [(b"content-length", str(len(answer)).encode("latin-1")), (b"content-type", b"application/json")]
        headers += _SECURITY_RAW
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _static_file(self, name: str) -> Response:
        if "/" in name or name.startswith(".") or Path(name).suffix not in _STATIC_TYPES:
            raise RequestError(f"no static file {name[:64]!r}", status=404)
        path = self._static / name
        if not path.is_file():
            raise RequestError(f"no static file {name[:64]!r}", status=404)
        response = FileResponse(path, media_type=_STATIC_TYPES[path.suffix])
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


# -- helpers -----------------------------------------------------------------------------------


def _error_response(exc: RequestError | StoreError, sub: str) -> Response:
    if isinstance(exc, StoreError):
        # The engine's message may name hosts or users: log it, tell the visitor only what to do.
        logger.warning("gateway route %s failed on ClickHouse: %s", sub, exc)
        response = JSONResponse({"error": "the data store is unavailable; try again in a minute"}, status_code=503)
        response.headers["Retry-After"] = "30"
        return response
    response = JSONResponse(exc.as_json(), status_code=exc.status)
    if exc.status == 503:
        response.headers["Retry-After"] = "5"
    elif isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def check_same_origin(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse cross-site POSTs: the Origin (or else the Referer) must be this host or an allowed one."""
    headers = request.headers
    _check_origin(
        headers.get("host", ""), headers.get("sec-fetch-site"), headers.get("origin"), headers.get("referer"), allowed
    )


def _text_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _check_origin(
    host: str, fetch_site: str | None, origin: str | None, referer: str | None, allowed: tuple[str, ...]
) -> None:
    if fetch_site == "cross-site":
        # The browser itself says another site made this request, whatever Origin or Referer say.
        raise RequestError(
            "cross-origin request refused: post to the consent gateway from the site's own pages",
            status=403,
        )
    if origin is not None:
        if origin == "null" or not _same_host(origin, host, allowed):
            raise RequestError(
                "cross-origin request refused: post to the consent gateway from the site's own pages",
                status=403,
            )
        return
    if referer is not None and not _same_host(referer, host, allowed):
        raise RequestError(
            "cross-origin request refused: post to the consent gateway from the site's own pages",
            status=403,
        )


def _same_host(url: str, host: str, allowed: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if f"{parts.scheme}://{parts.netloc}" in allowed:
        return True
    # Only pages served over HTTP(S) are the site's own: ftp://, file:// or a browser extension's
    # origin with the same host are not.
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host.lower()


def facts_of(runtime: GatewayRuntime, request: Request) -> RequestFacts:
    return RequestFacts(request.scope["headers"], runtime.cookie_name.encode("latin-1"))


def consent_of(runtime: GatewayRuntime, facts: RequestFacts) -> Consent:
    consent, _ = runtime.consents.consent_for(
        facts.consent_cookie, facts.gpc, runtime.policy_major(), facts.consent_alternatives
    )
    return consent


def _check_declared_length(declared: str | None, limit: int) -> None:
    """Refuse a Content-Length that is no number (400) or over ``limit`` (413) before reading."""
    if declared is None:
        return
    # isdigit() alone lets '\xb2' (latin-1 '²') through to int(), and int() refuses 4,300+ digits.
    if not (declared.isascii() and declared.isdigit()):
        raise RequestError("Content-Length is not a number", status=400)
    if len(declared) > 18 or int(declared) > limit:
        raise RequestError(f"the body is {declared} bytes; the limit is {limit}", status=413)


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes, and with 408 when it
    has not arrived in full within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    _check_declared_length(declared, limit)
    chunks = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                chunks.extend(chunk)
                if len(chunks) > limit:
                    raise RequestError(f"the body is over the limit of {limit} bytes", status=413)
    except TimeoutError:
        raise _body_timeout(timeout) from None
    return bytes(chunks)


def _body_timeout(timeout: float) -> RequestError:
    return RequestError(
        f"the request body did not arrive within {timeout:g} s (collect_body_timeout); send the whole body at once",
        status=408,
    )


def _wants_redirect(request: Request) -> bool:
    ctype = request.headers.get("content-type", "")
    return not ctype.startswith("application/json")


def _return_path(request: Request, given: str | None) -> str:
    path = safe_return_path(given)
    if path:
        return path
    referer = request.headers.get("referer", "")
    try:
        parts = urlsplit(referer)
    except ValueError:
        return "/"
    if parts.netloc and parts.netloc.lower() == request.headers.get("host", "").lower():
        return safe_return_path(parts.path + (f"?{parts.query}" if parts.query else "")) or "/"
    return "/"


async def _choice_input(request: Request, timeout: float = BODY_TIMEOUT) -> tuple[dict[str, Any], bool]:
    """The fields of a choice (action, categories, locale, return_to) from JSON or a form."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        raw = await read_body(request, MAX_CHOICE_BODY, timeout)
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise RequestError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise RequestError("send a JSON object with action and categories")
        return data, False
    if ctype == "application/x-www-form-urlencoded":
        # Parsed here rather than by request.form(): that needs python-multipart, which is not a
        # dependency, and every banner form (the no-JavaScript path) posts urlencoded.
        raw = await read_body(request, MAX_CHOICE_BODY, timeout)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise RequestError(
                "the form could not be read; post it as UTF-8 application/x-www-form-urlencoded"
            ) from None
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return {
            "action": fields.get("action"),
            "categories": [v for k, v in pairs if k == "categories"],
            "locale": fields.get("locale"),
            "return_to": fields.get("return_to"),
        }, True
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared is not None and (not (declared.isascii() and declared.isdigit()) or len(declared) > 18
                                     or int(declared) > MAX_CHOICE_BODY):
            raise RequestError(f"the form is over the limit of {MAX_CHOICE_BODY} bytes", status=413)
        try:
            async with asyncio.timeout(timeout):
                form: FormData = await request.form(max_files=0, max_fields=64)
        except TimeoutError:
            raise _body_timeout(timeout) from None
        except Exception:
            raise RequestError("the form could not be read; post it as application/x-www-form-urlencoded") from None
        return {
            "action": form.get("action"),
            "categories": [v for v in form.getlist("categories") if isinstance(v, str)],
            "locale": form.get("locale"),
            "return_to": form.get("return_to"),
        }, True
    raise RequestError(
        f"unsupported content type {ctype or 'none'!r}; send application/json or a form", status=415
    )


def _locale(runtime: GatewayRuntime, request: Request, given: object) -> str:
    if given in ("ko", "en"):
        return str(given)
    return choose_locale(request.headers.get("accept-language", ""), runtime.settings.default_locale)


def _cookie_headers_for_refused(runtime: GatewayRuntime, facts: RequestFacts, granted: frozenset[str]) -> list[bytes]:
    """Deletions for the request's cookies whose category is not granted, at most MAX_DELETIONS.

    Names the registry or the cookie catalogue knows come first, so made-up names can never crowd
    out a real cookie; unclassified names follow (a site's unknown cookie passes while the visitor
    grants the unknown category, and must go when they refuse it) if they are at most
    DELETED_NAME_MAX characters. A request full of invented cookies thus gets a small answer.
    """
    s = runtime.settings
    classify = runtime.cookies.classify
    known: list[str] = []
    unclassified: list[str] = []
    for n in dict.fromkeys(request_cookie_names(facts.cookie)):
        if n == runtime.cookie_name or len(known) >= MAX_DELETIONS:
            continue
        found = classify(n)
        if found.category in granted:
            continue
        if found.source is not Source.UNCLASSIFIED:
            known.append(n)
        elif len(n) <= DELETED_NAME_MAX and len(unclassified) < MAX_DELETIONS:
            unclassified.append(n)
    names = (known + unclassified)[:MAX_DELETIONS]
    return expire_headers(names, domain=s.cookie_domain, secure=s.cookie_secure)


def _receipt(
    runtime: GatewayRuntime,
    request: Request,
    facts: RequestFacts,
    record: ConsentRecord,
    locale: str,
    categories: tuple[str, ...],
    method: str,
) -> ReceiptRecord:
    s = runtime.settings
    # A receipt records whether the app marked the visitor as a child, and the guardian's categories.
    child = receipt_fields(runtime.child_guard.mark_of_headers(request.scope["headers"]))
    return ReceiptRecord(
        ts=time.time(),
        site=s.site_id,
        consent_id=record.consent_id,
        version=record.version,
        categories=categories,
        method=method,
        banner_hash=banner_hash(s.banner.title(locale), s.banner.text(locale)),
        locale=locale,
        ip=runtime.proxies.client_ip(request.scope, facts.forwarded_for),
        user_agent=facts.user_agent,
        child=bool(child["child"]),
        guardian_categories=tuple(child["guardian_categories"]),
    )


def _respond(
    request: Request,
    form: bool,
    return_to: str | None,
    payload: dict[str, Any],
    cookies: list[bytes],
) -> Response:
    response: Response
    if form:
        response = RedirectResponse(_return_path(request, return_to), status_code=303)
    else:
        response = JSONResponse(payload)
    for value in cookies:
        response.raw_headers.append((b"set-cookie", value))
    return response


# -- handlers ----------------------------------------------------------------------------------


async def state(runtime: GatewayRuntime, request: Request) -> Response:
    """The visitor's consent and everything a banner needs to render in either language."""
    s = runtime.settings
    facts = facts_of(runtime, request)
    guard = runtime.child_guard
    child_mark = guard.mark_of_headers(request.scope["headers"])
    consent = restrict_consent(consent_of(runtime, facts), child_mark, guard.behavioural)
    child = refused_for_child(child_mark, guard.behavioural)
    upcoming = s.announced_policy()
    in_force = s.policy_in_force()
    texts = {
        loc: {key: s.banner.get(key, loc) for key in _TEXT_KEYS} for loc in ("ko", "en")
    }
    return JSONResponse(
        {
            **consent.as_json(),
            "policy": {"version": str(in_force), "effective": in_force.effective.isoformat(), "url": s.policy_url},
            "upcoming": None
            if upcoming is None
            else {
                "version": str(upcoming),
                "effective": upcoming.effective.isoformat(),
                "major": upcoming.major > in_force.major,
            },
            "categories_info": [
                {
                    "key": c.key,
                    "required": c.required,
                    "name": {"ko": c.name_ko, "en": c.name_en},
                    "description": {"ko": c.description_ko, "en": c.description_en},
                    "cookies": runtime.cookies.names_for(c.key),
                    "granted": consent.allows(c.key),
                    "refused_by_gpc": consent.gpc and c.key in runtime.gpc_refuses,
                    "refused_for_child": c.key in child,
                }
                for c in s.categories
            ],
            # Shown when the app marked the visitor as under 14 (docs/cookies.md).
            "child_notice": dict(CHILD_NOTICE) if child else None,
            "links": {
                loc: {"cookies": declaration, "my_data": my_data}
                for loc, (declaration, my_data) in SETTINGS_LINKS.items()
            },
            "texts": texts,
            "locale": _locale(runtime, request, None),
            "prefix": s.prefix,
        }
    )


_TEXT_KEYS = (
    "title", "text", "accept", "reject", "settings", "save", "settings_link", "policy_link",
    "withdraw", "receipts", "gpc_notice", "upcoming_notice", "always_on", "cookies",
    "other_language", "close", "saved",
)


async def settings_page(runtime: GatewayRuntime, request: Request) -> Response:
    facts = facts_of(runtime, request)
    consent = runtime.child_guard.restrict_request(request.scope["headers"], consent_of(runtime, facts))
    locale = _locale(runtime, request, request.query_params.get("locale"))
    guard = runtime.child_guard
    child = refused_for_child(guard.mark_of_headers(request.scope["headers"]), guard.behavioural)
    page = runtime.banner.page(consent, locale, request.query_params.get("return_to") or "/", child)
    # No script rules here: the page has none of its own, and audit tools (axe) inject theirs.
    return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_CSP})


async def choose(runtime: GatewayRuntime, request: Request) -> Response:
    """Record a choice: sign the cookie, delete refused cookies, write a receipt."""
    s = runtime.settings
    data, form = await _choice_input(request, s.collect_body_timeout)
    action = data.get("action")
    if action not in ("accept_all", "reject_all", "save"):
        raise RequestError("action must be accept_all, reject_all or save", field="action")
    facts = facts_of(runtime, request)
    current = consent_of(runtime, facts)
    known = runtime.known
    if action == "accept_all":
        chosen = set(known)
        method = Method.ACCEPT_ALL
    elif action == "reject_all":
        chosen = set(runtime.required)
        method = Method.REJECT_ALL
    else:
        cats = data.get("categories", [])
        if isinstance(cats, str):
            cats = [cats]
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise RequestError("categories must be a list of category keys", field="categories")
        unknown = [c for c in cats if c not in known]
        if unknown:
            raise RequestError(
                f"unknown category {unknown[0][:32]!r}; use {sorted(known)}", field="categories"
            )
        chosen = set(cats) | set(runtime.required)
        method = Method.CUSTOM
    if facts.gpc and chosen & runtime.gpc_refuses:
        chosen -= runtime.gpc_refuses
        method = Method.GPC
    method_value = method.value
    child = runtime.child_guard.mark_of_headers(request.scope["headers"])
    if child is not None and child.child:
        # A child cannot grant behavioural categories; those the legal representative consented to
        # (recorded by the app) make it the representative's choice.
        chosen -= refused_for_child(child, runtime.child_guard.behavioural)
        if chosen & child.guardian & set(runtime.child_guard.behavioural):
            method_value = GUARDIAN_METHOD
    categories = tuple(k for k in s.category_keys if k in chosen)
    consent_id = current.consent_id or _new_consent_id()
    # The cookie keeps the choice's own method; the receipt says who made it.
    record = ConsentRecord(consent_id, str(s.policy_in_force()), categories, method.value, int(time.time()))
    locale = _locale(runtime, request, data.get("locale"))
    receipt = _receipt(runtime, request, facts, record, locale, categories, method_value)
    runtime.pipeline.submit_receipt(receipt)
    _link_visit(runtime, request, facts, record, data.get("return_to"))
    cookies = [runtime.consent_cookie.header(runtime.codec.encode(record))]
    cookies += _cookie_headers_for_refused(runtime, facts, frozenset(categories))
    payload = {
        "status": ConsentStatus.GIVEN.value,
        "categories": list(categories),
        "method": method_value,
        "version": record.version,
        "gpc": facts.gpc,
        "receipt": receipt.as_json(),
    }
    return _respond(request, form, data.get("return_to"), payload, cookies)


def _link_visit(
    runtime: GatewayRuntime, request: Request, facts: RequestFacts, record: ConsentRecord, return_to: str | None
) -> None:
    """When the choice grants analytics, one link record: this request's pseudonymous key of the day
    under the chooser's consented key, so that the visit's hits before the choice count with the
    ones after it (docs/privacy.md). Its landing URL (``return_to``, else the same-site Referer)
    carries the UTM values and the click id, which are kept only when marketing is granted."""
    granted = frozenset(record.categories)
    chooser = Consent(ConsentStatus.GIVEN, granted, record.consent_id)
    decision = runtime.policy.decide(VISIT, "", chooser, facts.user_agent)
    if decision is None or not decision.identified:
        return  # refused analytics (or a bot): nothing links the hits before the choice to anyone
    landing = safe_return_path(return_to) or ""
    if "?" not in landing:  # the banner sends the page with its query; a form may send less
        referer = _return_path(request, None)
        landing = referer if "?" in referer else landing
    path, query = split_url(landing)
    ip = runtime.proxies.client_ip(request.scope, facts.forwarded_for)
    runtime.pipeline.submit(
        RawRecord(
            kind=LINK, name="consent", category=decision.category, action=decision.action,
            consent_id=record.consent_id, ts=time.time(), site=runtime.settings.site_id,
            visitor=RecordVisitor(facts.user_agent, ip, granted), location=Location(facts.host, path, query, ""),
        )
    )


async def withdraw(runtime: GatewayRuntime, request: Request) -> Response:
    """Withdraw consent: forget the cookie, delete non-necessary cookies, erase identifiable rows."""
    s = runtime.settings
    form = _wants_redirect(request)
    data: dict[str, Any] = {}
    if request.headers.get("content-type", "").startswith(("application/json", "application/x-www-form", "multipart/")):
        data, form = await _choice_input(request, s.collect_body_timeout)
    facts = facts_of(runtime, request)
    current = consent_of(runtime, facts)
    erased = False
    receipt_json = None
    if current.consent_id is not None:
        # Revoked (durably, for every worker) before anything is erased: the withdrawn cookie, if
        # replayed later, is "no consent yet" and can never identify new rows under this id.
        await _revoke(runtime, current.consent_id)
        erased = await runtime.pipeline.erase(current.consent_id, ERASE_TIMEOUT)
        locale = _locale(runtime, request, data.get("locale"))
        record = ConsentRecord(
            current.consent_id, str(s.policy_in_force()), tuple(sorted(runtime.required)),
            Method.WITHDRAW.value, int(time.time()),
        )
        receipt = _receipt(runtime, request, facts, record, locale, record.categories, Method.WITHDRAW.value)
        runtime.pipeline.submit_receipt(receipt)
        receipt_json = receipt.as_json()
    cookies = expire_headers([runtime.cookie_name], domain=s.cookie_domain, secure=s.cookie_secure)
    cookies += _cookie_headers_for_refused(runtime, facts, runtime.required)
    payload = {"status": ConsentStatus.UNSET.value, "erased": erased, "receipt": receipt_json}
    return _respond(request, form, data.get("return_to"), payload, cookies)


async def _revoke(runtime: GatewayRuntime, consent_id: str) -> None:
    try:
        await asyncio.to_thread(runtime.revocations.revoke, consent_id)
    except RequestError:
        # Only ids of cookies this gateway signed reach here; one it could not store is logged by
        # its length, never its value, and the withdrawal still erases the rows.
        logger.warning("a consent id of %d characters could not be revoked", len(consent_id))
    except OSError as exc:
        raise RequestError(
            f"the withdrawal could not be recorded ({exc.strerror}); nothing was changed, retry in a minute",
            status=503,
        ) from None


async def receipts(runtime: GatewayRuntime, request: Request) -> Response:
    """This visitor's consent receipts, newest last."""
    facts = facts_of(runtime, request)
    consent = consent_of(runtime, facts)
    if consent.consent_id is None:
        return JSONResponse({"consent_id": None, "receipts": []})
    await runtime.pipeline.flush(10.0)
    store = await asyncio.to_thread(runtime.store)
    rows = await asyncio.to_thread(receipts_of, store, runtime.settings.site_id, consent.consent_id)
    return JSONResponse(
        {
            "consent_id": consent.consent_id,
            "receipts": [
                {
                    "receipt_id": str(r["receipt_id"]),
                    "ts": r["ts_ms"] / 1000,
                    "version": r["version"],
                    "categories": list(r["categories"]),
                    "method": r["method"],
                    "banner_hash": r["banner_hash"],
                    "locale": r["locale"],
                }
                for r in rows
            ],
        }
    )


_UNDECIDED: Any = object()


def _decide_events(
    runtime: GatewayRuntime, events: Sequence[ValidEvent], consent: Consent, user_agent: str, host: str
) -> tuple[list[EventFields], int, int]:
    """The records to store of ``events``, how many of those keep their consent id, and how many
    events the policy dropped."""
    kept = dropped = 0
    records: list[EventFields] = []
    # The decision and stored name depend only on the event's name, and a batch repeats a few
    # names and URLs: each is worked out once per request, and the events of one URL and referrer
    # share one location.
    decided: dict[str, tuple[Decision, str | None, str] | None] = {}
    locations: dict[tuple[str, str], Location] = {}
    admit = runtime.event_names.admit
    decide = runtime.policy.decide
    for event in events:
        name = event.name
        found = decided.get(name, _UNDECIDED)
        if found is _UNDECIDED:
            decision = decide(EVENT, name, consent, user_agent)
            found = decided[name] = (
                None if decision is None else (decision, decision.consent_id(consent), admit(name))
            )
        if found is None:
            dropped += 1
            continue
        decision, consent_id, stored_name = found
        if stored_name != name:
            # Folded into "(other)" by the cap, which counts every such event.
            stored_name = admit(name)
        where = (event.url, event.referrer)
        location = locations.get(where)
        if location is None:
            path, query = split_url(where[0])
            location = locations[where] = Location(host, path, query, where[1])
        records.append(
            EventFields(stored_name, decision.category, decision.action, consent_id, location,
                        props_text(event.props) if event.props else None)
        )
        if consent_id is not None:
            kept += 1
    return records, kept, dropped


async def accept_events(
    runtime: GatewayRuntime,
    scope: Scope,
    receive: Receive,
    content_type: str,
    content_length: str | None,
    facts: RequestFacts,
    ip: str,
) -> bytes:
    """Read, validate and hand over a /collect body; the body of the 202 answer.

    The headers are the request's first Content-Type and Content-Length; the others are read from
    ``facts`` as for every route; ``ip`` is the client's address.
    """
    s = runtime.settings
    ctype = content_type.split(";", 1)[0].strip().lower()
    # sendBeacon posts strings as text/plain; both carry the same JSON.
    if ctype not in ("application/json", "text/plain", ""):
        raise RequestError(f"unsupported content type {ctype!r}; send application/json", status=415)
    body = await _receive_body_within(receive, content_length, s.collect_max_body, s.collect_body_timeout)
    events = parse_collect_body(body, max_events=s.collect_max_events)
    # A child's behavioural categories are refused here too, so their events are dropped.
    guard = runtime.child_guard
    mark = guard.mark_of_cookies(facts.cookie_headers or ())
    consent = restrict_consent(consent_of(runtime, facts), mark, guard.behavioural)
    visitor = RecordVisitor(facts.user_agent, ip, consent.categories)
    now = time.time()
    records, kept, dropped = _decide_events(runtime, events, consent, visitor.user_agent, facts.host)
    pseudonymised = len(records) - kept
    accepted = len(events)
    # Nothing of the parsed body may outlive this point: a request waits a group commit below, and
    # whatever it holds meanwhile survives young garbage collections, which then cost more each.
    del events
    # 202 means durable: the request waits for the journal's group commit (a few ms), never for ClickHouse.
    if not await runtime.pipeline.submit_events(CollectedEvents(now, s.site_id, visitor, records)):
        raise RequestError("the gateway is busy and stored none of these events; retry in a few seconds", status=503)
    # What JSONResponse renders for {"accepted": ..., "kept": ..., ...}: the same bytes.
    return (
        f'{{"accepted":{accepted},"kept":{kept},"pseudonymised":{pseudonymised},"dropped":{dropped}}}'
    ).encode()


async def _receive_body_within(receive: Receive, declared: str | None, limit: int, timeout: float) -> bytes:
    """``_receive_body`` within ``timeout`` seconds, else the body-timeout error.

    What ``asyncio.timeout`` does (one timer that cancels the task, told apart from any other
    cancellation by the task's count of them) without its context manager's bookkeeping, which
    cost a single-event request about a tenth of its Python steps.
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - an ASGI server always runs the app in a task
        raise RuntimeError("the /collect body is read inside a task")
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await _receive_body(receive, declared, limit)
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            raise _body_timeout(timeout) from None
        raise
    finally:
        timer.cancel()


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """read_body() on the ASGI receive channel: refused with 413 as soon as it passes ``limit`` bytes."""
    _check_declared_length(declared, limit)
    chunks = bytearray()
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and not chunks:
                # The whole body in one message, as servers send small bodies: no copy.
                if len(chunk) > limit:
                    raise RequestError(f"the body is over the limit of {limit} bytes", status=413)
                return chunk if type(chunk) is bytes else bytes(chunk)
            if chunk:
                chunks.extend(chunk)
                if len(chunks) > limit:
                    raise RequestError(f"the body is over the limit of {limit} bytes", status=413)
            if not more:
                return bytes(chunks)
        elif kind == "http.disconnect":
            raise ClientDisconnect()


async def healthz(runtime: GatewayRuntime, request: Request) -> Response:
    return JSONResponse({"status": "ok", "writer": runtime.pipeline.running, "queued": runtime.pipeline.queued})


async def readyz(runtime: GatewayRuntime, request: Request) -> Response:
    """Readiness: 200 while the writer runs and ClickHouse answers, 503 during an outage."""
    pipeline = runtime.pipeline
    state = pipeline.state
    reachable = False
    try:
        await asyncio.wait_for(asyncio.to_thread(lambda: ping(runtime.store())), READY_PROBE_TIMEOUT)
        reachable = True
    except (StoreError, TimeoutError):
        reachable = False
    ready = reachable and pipeline.running
    body = {
        "status": "ready" if ready else "unavailable",
        "clickhouse": reachable,
        "writer": pipeline.running,
        "queued": pipeline.queued,
        "pending_rows": state.pending_rows,
        "journal_bytes": state.journal_bytes,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(runtime: GatewayRuntime, request: Request) -> Response:
    """The pipeline's metrics in Prometheus text format."""
    return Response(runtime.pipeline.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def _new_consent_id() -> str:
    return secrets.token_urlsafe(16)
