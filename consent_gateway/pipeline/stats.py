"""What the pipeline has done and where it stands: one object, counted once, feeding Prometheus.

Counts (rows inserted, refused, shed, ...) live only in the Prometheus instruments of
``PipelineMetrics``; the read-outs below take them from there. The few values the request side
checks on every request (is the journal full?) are plain attributes, written by the writer only,
and copied to their gauges in the same call (``publish``).
"""

from __future__ import annotations

from .metrics import PipelineMetrics


class PipelineStats:
    """The pipeline's numbers: the request side reads the plain values, Prometheus the rest."""

    __slots__ = (
        "clickhouse_up",
        "journal_bytes",
        "journal_full",
        "last_batch_size",
        "last_error",
        "last_insert_seconds",
        "metrics",
        "pending_rows",
        "visits_full",
    )

    def __init__(self, metrics: PipelineMetrics | None = None) -> None:
        self.metrics = metrics or PipelineMetrics()
        self.journal_bytes = 0
        self.journal_full = False
        self.visits_full = False
        self.clickhouse_up = True
        self.pending_rows = 0
        self.last_error = ""
        self.last_batch_size = 0
        self.last_insert_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"PipelineStats(pending_rows={self.pending_rows}, journal_bytes={self.journal_bytes}, "
            f"clickhouse_up={self.clickhouse_up})"
        )

    # -- written by the writer ------------------------------------------------------------------

    def publish(self, pending_rows: int, journal_bytes: int, *, journal_max: int, visit_fraction: float) -> None:
        """The backlog's size and the journal's, and whether either limit is reached."""
        self.pending_rows = pending_rows
        self.metrics.pending_rows.set(pending_rows)
        self.journal_bytes = journal_bytes
        self.journal_full = journal_bytes >= journal_max
        self.visits_full = journal_bytes >= journal_max * visit_fraction
        self.metrics.journal_bytes.set(journal_bytes)

    def committed(self, rows: int, seconds: float) -> None:
        self.metrics.commit_seconds.observe(seconds)
        self.metrics.journaled.inc(rows)

    def shed(self, kind: str, reason: str, count: int = 1) -> None:
        self.metrics.shed.labels(kind, reason).inc(count)

    def inserted(self, events: int, receipts: int, replayed: int, seconds: float) -> None:
        m = self.metrics
        m.inserted.labels("events").inc(events)
        m.inserted.labels("consent_receipts").inc(receipts)
        m.replayed.inc(replayed)
        m.batch_rows.observe(events + receipts)
        m.insert_seconds.observe(seconds)
        m.clickhouse_up.set(1)
        self.last_batch_size = events + receipts
        self.last_insert_seconds = seconds
        self.clickhouse_up = True
        self.last_error = ""

    def insert_failed(self, error: str) -> None:
        self.metrics.failed.inc()
        self.metrics.clickhouse_up.set(0)
        self.clickhouse_up = False
        self.last_error = error

    def refused(self, table: str, rows: int) -> None:
        self.metrics.rejected.labels(table).inc(rows)

    def lost(self, rows: int) -> None:
        self.metrics.dropped.inc(rows)

    def erased_rows(self, rows: int) -> None:
        self.metrics.erased.inc(rows)

    # -- read-outs (tools, tests) ---------------------------------------------------------------

    def _sample(self, name: str, labels: dict[str, str] | None = None) -> int:
        return int(self.metrics.registry.get_sample_value(name, labels or {}) or 0)

    @property
    def inserted_events(self) -> int:
        return self._sample("cg_pipeline_inserted_rows_total", {"table": "events"})

    @property
    def inserted_receipts(self) -> int:
        return self._sample("cg_pipeline_inserted_rows_total", {"table": "consent_receipts"})

    @property
    def batches(self) -> int:
        """Inserts that succeeded."""
        return self._sample("cg_pipeline_insert_batch_rows_count")

    @property
    def failed_batches(self) -> int:
        return self._sample("cg_pipeline_failed_inserts_total")

    @property
    def replayed(self) -> int:
        return self._sample("cg_pipeline_replayed_rows_total")

    @property
    def dropped(self) -> int:
        return self._sample("cg_pipeline_dropped_rows_total")

    @property
    def erased(self) -> int:
        return self._sample("cg_pipeline_erased_rows_total")

    @property
    def rejected(self) -> int:
        tables = ("events", "consent_receipts")
        return sum(self._sample("cg_pipeline_rejected_rows_total", {"table": t}) for t in tables)

    @property
    def shed_total(self) -> int:
        total = 0.0
        for metric in self.metrics.shed.collect():
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return int(total)
