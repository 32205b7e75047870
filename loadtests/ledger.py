"""The ledger of a locust run's events: sent, acknowledged, dropped, erased, expected in ClickHouse.

Kept apart from the locustfile so that it can be imported (and tested) without locust, whose
gevent monkey-patching must not run inside other processes.
"""

from __future__ import annotations

import itertools
import string
import threading
from typing import Any


class Ledger:
    """What this locust process sent to ``/collect`` and what the gateway acknowledged (thread-safe)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.sent = 0
        self.acknowledged = 0  # in 202 answers ("accepted")
        self.dropped = 0  # acknowledged, but dropped by the policy (marketing without consent)
        self.refused = 0  # in 503 answers: the client retries later, nothing was stored
        self.failed = 0  # other answers or no answer
        self.stored_ids: list[str] = []  # acknowledged and kept or pseudonymised: must be in ClickHouse
        self.erased_ids: set[str] = set()  # identified events of visitors who withdrew: erased on purpose

    def new_id(self) -> str:
        # Letters only: the pseudonymiser redacts strings with 9 or more digits.
        n = next(self._ids)
        out = ""
        while True:
            n, r = divmod(n, 26)
            out = string.ascii_lowercase[r] + out
            if not n:
                return out

    def record(self, events: list[dict[str, Any]], status: int, expected_drop: set[int]) -> list[str]:
        """Account for one ``/collect`` answer; the ids that must now be stored."""
        with self._lock:
            self.sent += len(events)
            if status == 202:
                self.acknowledged += len(events)
                self.dropped += len(expected_drop)
                kept = [e["props"]["eid"] for i, e in enumerate(events) if i not in expected_drop]
                self.stored_ids += kept
                return kept
            if status == 503:
                self.refused += len(events)
            else:
                self.failed += len(events)
            return []

    def erased(self, ids: list[str]) -> None:
        """A withdrawal erased these identified events: they must be gone, not stored."""
        with self._lock:
            self.erased_ids.update(ids)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "run": self.run,
                "sent": self.sent,
                "acknowledged": self.acknowledged,
                "dropped_by_policy": self.dropped,
                "refused_503": self.refused,
                "failed": self.failed,
                "erased_by_withdrawal": len(self.erased_ids),
                "expected_stored": len(self.stored_ids) - len(self.erased_ids),
                "ids": [i for i in self.stored_ids if i not in self.erased_ids],
                "erased_ids": sorted(self.erased_ids),
            }
