"""Memory that request data can reach, bounded: an LRU capped in entries and bytes, and a warner
that rate-limits its log lines instead of spending a one-off budget.

Anything keyed on what a client sends (headers, cookie names, paths) must not let one client grow
a worker without limit: keys are cut to ``max_key_chars`` before they are stored, and the cache
evicts its least recently used entries once either cap is reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What a str costs on top of its characters (CPython's header); enough to make tiny keys count.
_STR_OVERHEAD = 64


def truncate_key(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters: what a bounded cache may keep of a client's value."""
    return text if len(text) <= max_chars else text[:max_chars]


def _size_of(key: object) -> int:
    if isinstance(key, str | bytes):
        return _STR_OVERHEAD + len(key)
    if isinstance(key, tuple):
        return _STR_OVERHEAD + sum(_size_of(part) for part in key)
    return _STR_OVERHEAD


class BoundedLRU(Generic[K, V]):
    """A least-recently-used map capped at ``max_entries`` entries and ``max_bytes`` bytes of keys.

    The byte count is of the keys (the part a client controls); values should be small, fixed-size
    results such as a parsed user agent. A key larger than ``max_bytes`` on its own is never stored;
    ``max_entries = 0`` stores nothing (caching off).
    Thread-safe: workers run the ASGI app on one loop, but the writer thread may read too.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"max_entries ({max_entries}) and max_bytes ({max_bytes}) must be 0 or more")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"BoundedLRU(entries={len(self._data)}/{self.max_entries}, bytes={self._bytes}/{self.max_bytes})"

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: K, value: V) -> None:
        size = _size_of(key)
        if size > self.max_bytes or self.max_entries == 0:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, size)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped

    def get_or_compute(self, key: K, compute: Callable[[K], V]) -> V:
        """The cached value of ``key``, computed and stored on a miss."""
        found = self.get(key)
        if found is None:
            found = compute(key)
            self.put(key, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


class RateLimitedWarner:
    """Logs a warning about a new name at most ``per_minute`` times a minute, then counts the rest.

    A flood of invented names (one request can carry thousands) costs one bounded set of names seen
    recently and a few log lines a minute; it never silences the warning for good, since the
    allowance refills. Names are cut to ``max_name_chars`` before they are kept or logged.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_minute: int = 10,
        remember: int = 1024,
        max_name_chars: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self.per_minute = per_minute
        self.max_name_chars = max_name_chars
        self._seen: BoundedLRU[str, bool] = BoundedLRU(remember, remember * (_STR_OVERHEAD + max_name_chars))
        self._clock = clock
        self._window_start = clock()
        self._in_window = 0
        self.suppressed = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimitedWarner(per_minute={self.per_minute}, suppressed={self.suppressed})"

    def warn(self, name: str, message: str, *args: object) -> bool:
        """Log ``message`` (its first argument is the cut name) unless the minute's allowance is
        spent or ``name`` was warned about recently; True when a line was written."""
        short = truncate_key(name, self.max_name_chars)
        if self._seen.get(short) is not None:
            return False
        self._seen.put(short, True)
        with self._lock:
            now = self._clock()
            if now - self._window_start >= 60.0:
                if self.suppressed:
                    self._logger.warning("%d more warnings like the last were suppressed", self.suppressed)
                self._window_start = now
                self._in_window = 0
                self.suppressed = 0
            if self._in_window >= self.per_minute:
                self.suppressed += 1
                return False
            self._in_window += 1
        self._logger.warning(message, short, *args)
        return True
