"""The writer's knobs: taken from Settings, which alone declares their defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..settings import Settings

# How long visit records (awaited by nobody) may gather before a group commit of their own; they
# also ride along with any earlier group commit. Not a setting: a page never waits for it.
VISIT_WINDOW = 0.1


@dataclass(frozen=True, kw_only=True, slots=True)
class WriterConfig:
    """The writer's knobs (``from_settings`` builds them from the gateway's Settings)."""

    batch_size: int
    flush_interval: float
    max_pending: int
    commit_window: float
    journal_max_bytes: int
    visit_shed_fraction: float
    retry_initial: float
    retry_max: float
    cluster: str  # a ClickHouse cluster: deletes go to each shard's local table ON CLUSTER
    insert_settings: tuple[tuple[str, str], ...] = ()
    visit_window: float = VISIT_WINDOW

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WriterConfig:
        """The knobs of ``settings``; ``overrides`` replace single ones (tools and tests)."""
        insert_settings: tuple[tuple[str, str], ...] = ()
        if settings.clickhouse_async_insert:
            # The server batches small inserts; waiting for it keeps "inserted" meaning inserted.
            insert_settings = (("async_insert", "1"), ("wait_for_async_insert", "1"))
        config = cls(
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            max_pending=settings.queue_max,
            commit_window=settings.commit_window,
            journal_max_bytes=settings.journal_max_bytes,
            visit_shed_fraction=settings.visit_shed_fraction,
            retry_initial=settings.insert_retry_initial,
            retry_max=settings.insert_retry_max,
            cluster=settings.cluster,
            insert_settings=insert_settings,
        )
        return replace(config, **overrides) if overrides else config
