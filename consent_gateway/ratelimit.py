"""Abuse limits of one worker: per-client token buckets and the cap on distinct event names.

Both live in memory and per worker process: with N workers a client gets up to N times the rate,
and the event-name cap counts names per worker since it started (seeded from the names already
stored when the runtime starts). Neither needs shared state to do its job, which is to keep one
client from flooding the pipeline and one tracker from flooding the ``name`` column.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache

from .errors import RequestError

logger = logging.getLogger("consent_gateway.ratelimit")

# Folded event names: no tracker can send this one, since names must start with a letter.
OTHER_EVENT = "(other)"


class RateLimited(RequestError):
    """A 429 answer; ``retry_after`` is the whole number of seconds until a request will pass."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class TokenBucket:
    """Per-key token buckets: ``burst`` requests at once, refilled at ``per_minute``.

    At most ``max_keys`` clients are tracked; the least recently seen are forgotten first (a
    forgotten client starts again with a full bucket, which errs on the side of serving people).
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be above zero and burst at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(per_minute={self.rate * 60:g}, burst={self.burst:g}, tracked={len(self._buckets)})"

    def peek(self, key: str) -> float:
        """What ``take`` would answer, without taking anything: 0.0 when a token is available."""
        now = self._clock()
        with self._lock:
            found = self._buckets.get(key)
        if found is None:
            return 0.0
        tokens = min(self.burst, found[0] + (now - found[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


def client_key(ip: str) -> str | None:
    """The unit a limit applies to: one IPv4 address, or one IPv6 /64 (what one subscriber gets).

    None when the address tells clients apart no better than not at all: no IP (a Unix socket,
    a test client) or loopback (a local proxy whose address is not in ``trusted_proxies``). One
    bucket for every visitor would turn the limit against the site itself.
    """
    # The same addresses come back request after request: each is parsed once (at most
    # CLIENT_KEY_CACHE_SIZE of them, none longer than an address's text can be).
    if len(ip) <= _ADDRESS_CHARS:
        return _cached_client_key(ip)
    return _client_key(ip)


def _client_key(ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            return None if addr.is_loopback else str(ipaddress.ip_network(f"{addr.exploded}/64", strict=False))
    return None if addr.is_loopback else str(addr)


CLIENT_KEY_CACHE_SIZE = 4096
_ADDRESS_CHARS = 64  # longer than any IPv6 text with a zone: anything longer is no address
_cached_client_key = lru_cache(maxsize=CLIENT_KEY_CACHE_SIZE)(_client_key)

# Page views through the wrapped app: generous, since one page may pull a dozen assets through
# the gateway and a school or office shares one address; it stops a single client's flood only.
PAGE_PER_MINUTE = 1200.0
PAGE_BURST = 600


class RateLimits:
    """The buckets of the gateway's routes: ``collect`` for ``/collect``, ``consent`` for choices,
    withdrawals and receipts, ``page`` for requests passed to the wrapped app. A limit of 0 per
    minute switches that bucket off.

    ``check`` both tests and charges. Where a request can still be refused for another reason (the
    origin check), call ``peek`` first and ``charge`` only once the request is accepted: refused
    requests then cost nothing, so a third-party page cannot spend a visitor's allowance.
    """

    def __init__(
        self,
        *,
        collect_per_minute: float,
        collect_burst: int,
        consent_per_minute: float,
        consent_burst: int,
        page_per_minute: float = PAGE_PER_MINUTE,
        page_burst: int = PAGE_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        if collect_per_minute > 0:
            self._buckets["collect"] = TokenBucket(collect_per_minute, collect_burst, clock=clock)
        if consent_per_minute > 0:
            self._buckets["consent"] = TokenBucket(consent_per_minute, consent_burst, clock=clock)
        if page_per_minute > 0:
            self._buckets["page"] = TokenBucket(page_per_minute, page_burst, clock=clock)

    def __repr__(self) -> str:
        return f"RateLimits({sorted(self._buckets)})"

    def _limiter(self, bucket: str, ip: str) -> tuple[TokenBucket, str] | None:
        limiter = self._buckets.get(bucket)
        if limiter is None:
            return None
        key = client_key(ip)
        return None if key is None else (limiter, key)

    def check(self, bucket: str, ip: str) -> None:
        """Raise RateLimited when ``ip`` has used up ``bucket``; otherwise charge one request."""
        found = self._limiter(bucket, ip)
        if found is not None:
            _raise_if_waiting(bucket, found[0].take(found[1]))

    def peek(self, bucket: str, ip: str) -> None:
        """Raise RateLimited when ``ip`` has used up ``bucket``, charging nothing."""
        found = self._limiter(bucket, ip)
        if found is not None:
            _raise_if_waiting(bucket, found[0].peek(found[1]))

    def charge(self, bucket: str, ip: str) -> None:
        """Count one accepted request against ``bucket`` (raises RateLimited if it ran out meanwhile)."""
        self.check(bucket, ip)


def _raise_if_waiting(bucket: str, wait: float) -> None:
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(f"too many {bucket} requests from this address; retry in {seconds} s", retry_after=seconds)


class EventNameCap:
    """At most ``limit`` distinct unregistered event names per site; later new names are folded
    into ``(other)`` so they are still counted but cannot grow the ``name`` column without bound.
    Registered names (``[events]`` in the settings) always pass and do not count."""

    def __init__(self, limit: int, registered: Iterable[str] = ()) -> None:
        self.limit = limit
        self._registered = frozenset(registered)
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.folded = 0

    def __repr__(self) -> str:
        return f"EventNameCap(limit={self.limit}, seen={len(self._seen)}, folded={self.folded})"

    def seed(self, names: Iterable[str]) -> None:
        """Count names already stored (from the events table) against the cap."""
        with self._lock:
            for name in names:
                if name not in self._registered and name != OTHER_EVENT and len(self._seen) < self.limit:
                    self._seen.add(name)

    def admit(self, name: str) -> str:
        """``name`` itself while it is registered, known or under the cap; else ``(other)``."""
        if name in self._registered or name in self._seen:
            return name
        with self._lock:
            if name in self._seen:
                return name
            if len(self._seen) < self.limit:
                self._seen.add(name)
                return name
            self.folded += 1
            if self.folded == 1:
                logger.warning(
                    "more than %d distinct event names; new names are stored as %r. Register the names "
                    "you need under [events] or raise max_event_names.",
                    self.limit,
                    OTHER_EVENT,
                )
        return OTHER_EVENT
