"""A daemon thread that runs one job at a fixed interval until stopped (salt destruction)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("consent_gateway.pipeline")


class Periodic(threading.Thread):
    """Runs ``job`` every ``interval`` seconds (the first run at once, or after one interval when
    ``at_once`` is false); ``stop()`` ends it promptly.

    A thread rather than an asyncio task: the gateway may be started from any request's event
    loop, and the job (file locking, fsync) must not block a loop.
    """

    def __init__(self, name: str, job: Callable[[], object], interval: float, *, at_once: bool = True) -> None:
        super().__init__(name=f"consent-gateway-{name}", daemon=True)
        self._job = job
        self._interval = interval
        self._at_once = at_once
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        return f"Periodic({self.name!r}, every {self._interval}s)"

    def run(self) -> None:
        if not self._at_once:
            self._stopped.wait(self._interval)
        while not self._stopped.is_set():
            try:
                self._job()
            except Exception:
                logger.exception("%s failed; it runs again in %.0fs", self.name, self._interval)
            self._stopped.wait(self._interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout)
