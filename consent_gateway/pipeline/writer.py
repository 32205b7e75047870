"""The writer: group commits to the journal, batched inserts into ClickHouse, erasure.

Three parts on two threads. The ``Committer`` (on the writer thread) takes records off the queue,
builds their rows and appends them to the journal as one group commit, then answers the waiting
``/collect`` requests. The ``Inserter`` (a thread of its own) gathers committed groups into plans of
up to ``batch_size`` rows; a plan is journaled (with its deduplication token) before it is
inserted, so after a crash the very same insert is repeated and ClickHouse drops it if it already
arrived (``insert_deduplication_token`` on tables with ``non_replicated_deduplication_window``; see
docs/pipeline.md). A slow or unreachable ClickHouse therefore never delays an acknowledgement.
``Erasure`` takes a withdrawn visitor's rows out of the backlog and owes ClickHouse the DELETE.
What they share is the ``Backlog``. Without a journal on disk a ``MemoryJournal`` stands in.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..records import RawRecord
from ..rows import RowBuilder
from ..store import Store
from .backlog import Backlog
from .committer import Committer
from .config import WriterConfig
from .erasure import Erasure
from .inserter import INSERT_DEDUP_SETTINGS, Inserter
from .journal import Journal, MemoryJournal, Recovered
from .messages import Command, EventBatch, notify
from .metrics import PipelineMetrics
from .stats import PipelineStats

logger = logging.getLogger("consent_gateway.pipeline")

__all__ = [
    "INSERT_DEDUP_SETTINGS",
    "Command",
    "EventBatch",
    "PipelineState",
    "PipelineStats",
    "Writer",
    "WriterConfig",
    "notify",
]

# The request side's view of the writer is the pipeline's one stats object.
PipelineState = PipelineStats


class Writer(threading.Thread):
    """The committer's thread; it owns the journal, starts the inserter and stops both."""

    def __init__(
        self,
        source: queue.SimpleQueue[Any],
        *,
        connect: Callable[[], Store],
        rows: RowBuilder,
        config: WriterConfig,
        journal: Journal | None = None,
        recovered: Recovered | None = None,
        metrics: PipelineMetrics | None = None,
        state: PipelineStats | None = None,
        taken: Callable[[int], None] | None = None,
        visits: collections.deque[RawRecord] | None = None,
        visits_taken: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(name="consent-gateway-writer", daemon=True)
        self.stats = state if state is not None else PipelineStats(metrics)
        self.metrics = self.stats.metrics
        self._recovered = recovered or Recovered()
        self._backlog = Backlog(journal if journal is not None else MemoryJournal(), config, self.stats)
        self.erasure = Erasure(self._backlog, rows, self.stats, cluster=config.cluster)
        self.inserter = Inserter(self._backlog, self.erasure, connect=connect, config=config, stats=self.stats)
        self.committer = Committer(
            source,
            visits if visits is not None else collections.deque(),
            self._backlog,
            self.erasure,
            rows=rows,
            config=config,
            stats=self.stats,
            taken=taken or (lambda n: None),
            visits_taken=visits_taken or (lambda n: None),
        )
        with self._backlog.lock:
            self._backlog.publish()

    def __repr__(self) -> str:
        return f"Writer({self._backlog!r}, alive={self.is_alive()})"

    @property
    def state(self) -> PipelineStats:
        return self.stats

    def run(self) -> None:
        b = self._backlog
        try:
            self._replay()
            self.inserter.start()
            deadline = self.committer.loop()
            self._shutdown(deadline)
        except Exception:  # pragma: no cover - a bug; keep the journal, say so loudly
            logger.exception("the pipeline writer stopped on an unexpected error; the journal keeps its records")
            raise
        finally:
            with b.lock:
                if b.stop_at is None:
                    b.stop_at = time.monotonic()
                b.lock.notify_all()
            if self.inserter.is_alive():
                self.inserter.join()
            with b.lock:
                b.journal.close()
                b.publish()

    def _replay(self) -> None:
        """Put the journal's unfinished work ahead of every new record; the inserter starts on it."""
        rec = self._recovered
        b = self._backlog
        with b.lock:
            b.plans.extend(rec.plans)
            b.groups.extend(rec.groups)
            b.tombstones.update(rec.tombstones)
            if rec.plans or rec.groups or rec.tombstones:
                logger.info("replaying %d journaled rows", rec.rows)
                b.urgent = True
            b.publish()
        if rec.erased_rows:
            self.stats.erased_rows(rec.erased_rows)
        self._recovered = Recovered()

    def _shutdown(self, deadline: float) -> None:
        """Journal what is still queued, then let the inserter work until done or the deadline."""
        b = self._backlog
        self.committer.drain()
        with b.lock:
            b.stop_at = deadline
            b.lock.notify_all()
        self.inserter.join(max(0.0, deadline - time.monotonic()) + 1.0)
        with b.lock:
            left = b.pending_rows()
        if left:
            where = "in the journal; they are replayed at the next start" if b.journal.durable else "LOST (no journal)"
            logger.error("stopping with %d rows not in ClickHouse: %s", left, where)
