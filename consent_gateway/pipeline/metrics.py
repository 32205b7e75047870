"""The pipeline's counters, gauges and histograms, on a registry of its own (one per gateway)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class PipelineMetrics:
    """Prometheus metrics of one pipeline; ``render()`` gives the text exposition format.

    A registry per instance (not prometheus-client's global one) so that several gateways, or a
    fresh gateway per test, never share or collide on series.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.queued = Counter("cg_pipeline_queued_records", "Records accepted into the queue", ["kind"], registry=r)
        self.journaled = Counter("cg_pipeline_journaled_rows", "Rows made durable in the local journal", registry=r)
        self.inserted = Counter("cg_pipeline_inserted_rows", "Rows inserted into ClickHouse", ["table"], registry=r)
        self.replayed = Counter(
            "cg_pipeline_replayed_rows", "Rows inserted from a journal left by an earlier process", registry=r
        )
        self.shed = Counter(
            "cg_pipeline_shed_records",
            "Records refused at a limit (kind: visit or event; reason: queue or journal)",
            ["kind", "reason"],
            registry=r,
        )
        self.failed = Counter(
            "cg_pipeline_failed_inserts", "ClickHouse inserts that failed and will be retried", registry=r
        )
        self.props_dropped = Counter(
            "cg_pseudonymised_props_dropped", "Props keys [event_props] left out of pseudonymised rows", registry=r
        )
        self.dropped = Counter(
            "cg_pipeline_dropped_rows", "Rows lost without a journal when the retry buffer overflowed", registry=r
        )
        self.rejected = Counter(
            "cg_pipeline_rejected_rows",
            "Rows ClickHouse refused as invalid data; isolated from their batch and dropped",
            ["table"],
            registry=r,
        )
        self.erased = Counter(
            "cg_pipeline_erased_rows", "Identified rows removed from the queue or journal by a withdrawal", registry=r
        )
        self.ack_timeouts = Counter(
            "cg_pipeline_ack_timeouts",
            "/collect requests answered 503 because the journal did not commit in time",
            registry=r,
        )
        self.queue_depth = Gauge("cg_pipeline_queue_records", "Records waiting in the queue", registry=r)
        self.journal_bytes = Gauge("cg_journal_bytes", "Bytes in the journal's segment files", registry=r)
        self.pending_rows = Gauge(
            "cg_pipeline_pending_rows", "Rows durable in the journal, not yet in ClickHouse", registry=r
        )
        self.clickhouse_up = Gauge("cg_clickhouse_up", "1 when the last ClickHouse insert succeeded", registry=r)
        self._histograms(r)
        self.clickhouse_up.set(1)

    def _histograms(self, r: CollectorRegistry) -> None:
        self.batch_rows = Histogram(
            "cg_pipeline_insert_batch_rows",
            "Rows per ClickHouse insert",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000),
            registry=r,
        )
        self.insert_seconds = Histogram(
            "cg_pipeline_insert_seconds",
            "Latency of one ClickHouse insert",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "cg_journal_commit_seconds",
            "Latency of one journal group commit (write and fsync)",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )

    def __repr__(self) -> str:
        return "PipelineMetrics()"

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
