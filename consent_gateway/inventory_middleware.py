"""Feeds the cookie inventory from live traffic: an ASGI middleware placed inside the gateway.

``ConsentGateway(CookieInventoryMiddleware(app, inventory, ...), settings)``: inside the gateway it
sees ``scope["consent"]``, the request's Cookie header and every Set-Cookie the app sends before the
gateway filters them, so it knows which of them the gateway will remove. It counts names only and
passes every message on unchanged. With ``open_store`` it also writes the counts to ClickHouse
every ``flush_interval`` seconds from a thread of its own, and once more when the app shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .cookies import request_cookie_names, set_cookie_names
from .inventory import CookieInventory, create_inventory_table, flush_inventory
from .pipeline.periodic import Periodic
from .store.client import Store

logger = logging.getLogger("consent_gateway.inventory")
# A returning visitor sends the same Cookie header page after page: its names are read once.
# At most this many headers of at most COOKIE_CACHE_BYTES each are kept (1 MiB in all).
COOKIE_CACHE_SIZE = 256
COOKIE_CACHE_BYTES = 4096
_name = itemgetter(0)


@lru_cache(maxsize=COOKIE_CACHE_SIZE)
def _cached_cookie_names(header: bytes) -> tuple[str, ...]:
    return tuple(request_cookie_names(header.decode("latin-1")))


def cookie_names(header: bytes) -> tuple[str, ...] | list[str]:
    """The cookie names of one Cookie header, in order."""
    if len(header) <= COOKIE_CACHE_BYTES:
        return _cached_cookie_names(header)
    return request_cookie_names(header.decode("latin-1"))


class CookieInventoryMiddleware:
    """Counts cookie names of requests and of the app's responses into ``inventory``."""

    def __init__(
        self,
        app: ASGIApp,
        inventory: CookieInventory,
        *,
        open_store: Callable[[], Store] | None = None,
        site: str = "",
        flush_interval: float = 60.0,
        events_months: int = 3,
        category_of: Callable[[str], str] | None = None,
    ) -> None:
        self.app = app
        self.inventory = inventory
        # The category the gateway filters Set-Cookie by (``runtime.cookies.category_of``), so that
        # "blocked" counts what the gateway really removed; the inventory's classifier by default.
        self.category_of = category_of or (lambda name: inventory.classifier.classify(name)[0])
        self._open_store = open_store
        self._site = site
        self._flush_interval = flush_interval
        self._events_months = events_months
        self._store: Store | None = None
        self._flusher: Periodic | None = None
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"CookieInventoryMiddleware({self.inventory!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        if self._open_store is not None and self._flusher is None:
            self._start_flushing()
        consent = scope.get("consent")
        granted: frozenset[str] = consent.categories if consent is not None else frozenset()
        path = scope.get("path", "")
        inventory = self.inventory
        headers = scope.get("headers", [])
        if type(headers) is not list:
            headers = list(headers)
        by_name = dict(headers)  # in C; a name sent twice keeps one value, so then every header is read
        if len(by_name) == len(headers):
            cookie = by_name.get(b"cookie")
            cookies = () if cookie is None else (cookie,)
        else:
            cookies = tuple(value for key, value in headers if key == b"cookie")
        for value in cookies:
            inventory.observe_request_cookies(cookie_names(value), path=path, granted=granted)
        category_of = self.category_of

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and _has_set_cookie(message.get("headers", ())):
                for key, value in message.get("headers", ()):
                    if key.lower() == b"set-cookie":
                        # The gateway keeps a Set-Cookie only when every name it may be read under is granted.
                        allowed = all(category_of(name) in granted for name in set_cookie_names(value))
                        inventory.observe_set_cookie(value, path=path, granted=allowed, blocked=not allowed)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(self.close)
            await send(message)

        await self.app(scope, receive, wrapped_send)

    def _start_flushing(self) -> None:
        with self._lock:
            if self._flusher is not None or self._closed:
                return
            # Nothing is counted yet when the first request starts the flusher: its first write waits.
            self._flusher = Periodic("cookie-inventory", self.flush, self._flush_interval, at_once=False)
            self._flusher.start()

    def flush(self) -> int:
        """Write the counts gathered so far (blocking); returns the rows written."""
        if self._open_store is None:
            return 0
        if self._store is None:
            self._store = self._open_store()
            create_inventory_table(self._store, events_months=self._events_months)
        return flush_inventory(self._store, self.inventory, self._site)

    def close(self) -> None:
        """Stop the flushing thread and write what is left (blocking; safe to call twice)."""
        with self._lock:
            self._closed = True
            flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.stop()
        try:
            self.flush()
        except Exception:
            logger.exception("the cookie inventory could not be written at shutdown; its counts are lost")


def _has_set_cookie(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether any header is a Set-Cookie, in any case (the names are joined and searched in C)."""
    return b"set-cookie" in b"\n".join(map(_name, headers)).lower()
