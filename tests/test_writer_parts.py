"""The writer's parts: the in-memory journal's acknowledgement, withdrawals without mutation."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from msgspec import structs

from consent_gateway import Settings
from consent_gateway.pipeline import MemoryJournal, Writer, WriterConfig
from consent_gateway.pipeline import committer as committer_module
from consent_gateway.pipeline.messages import Command, EventBatch
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import CollectedEvents, EventFields, Location, Visitor
from consent_gateway.rows import RowBuilder
from consent_gateway.store import Store, migrate, open_store
from tests.conftest import CHDB_URL
from tests.test_journal import _flush, _record

CID = "cid-withdrawn-0123456789"


def _running_writer(settings: Settings, source: queue.SimpleQueue[Any], **kwargs: Any) -> Writer:
    writer = Writer(
        source,
        connect=lambda: open_store(CHDB_URL, settings.database),
        rows=RowBuilder(settings, SaltStore(settings.keys_dir)),
        # A long interval: only an urgent insert (or a flush) can store anything during the test.
        config=WriterConfig.from_settings(settings, flush_interval=60.0),
        **kwargs,
    )
    writer.start()
    return writer


def _stop(writer: Writer, source: queue.SimpleQueue[Any]) -> None:
    source.put(Command("stop", 0.0, None))
    writer.join(30)
    assert not writer.is_alive()


def test_without_a_journal_a_request_is_answered_only_once_its_rows_are_in_clickhouse(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    settings = make_settings(journal_enabled=False)
    migrate(store)
    source: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = _running_writer(settings, source)
    stored_when_answered: list[int] = []
    answered = threading.Event()

    def done(value: Any) -> None:
        count = store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0]
        stored_when_answered.append(count if value else -1)
        answered.set()

    batch = CollectedEvents(
        1_795_000_000.0, "test-site", Visitor("Mozilla/5.0", "203.0.113.9", frozenset()),
        [EventFields("signup", "analytics", "pseudonymise", None, Location("example.test", "/p", "", ""), None)] * 3,
    )
    try:
        source.put(EventBatch(batch, done))
        assert answered.wait(30), "the request was never answered"
        assert stored_when_answered == [3], "acknowledged only after the insert: nothing outlives the process"
        assert writer.stats.journal_bytes == 0 and not writer.stats.journal_full
    finally:
        _stop(writer, source)


def test_memory_journal_names_every_plan_apart_and_keeps_nothing() -> None:
    first, second = MemoryJournal(), MemoryJournal()
    group = first.append_group([b"[1]"], [-1], [])
    plan = first.append_plan([group])
    tomb = first.append_tombstone(5)
    assert len({group.seq, plan.seq, tomb}) == 3, "one sequence for groups, plans and tombstones"
    assert plan.token != second.append_plan([]).token, "two processes never share a deduplication token"
    assert not first.durable and first.bytes == 0 and first.release() == 0


def test_a_record_of_a_consent_withdrawn_meanwhile_is_stored_anonymous_and_left_as_it_was(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    settings = make_settings()
    migrate(store)
    source: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = _running_writer(settings, source)
    record = _record("late")
    visitor = structs.replace(record.visitor, granted=frozenset({"analytics"}))
    late = structs.replace(record, action="keep", consent_id=CID, visitor=visitor)
    erased = threading.Event()
    try:
        source.put(Command("erase", CID, lambda ok: erased.set()))
        source.put(late)
        assert _flush(source)
        assert erased.wait(30)
    finally:
        _stop(writer, source)
    assert (late.action, late.consent_id) == ("keep", CID), "the decided record is never changed"
    rows = store.query_rows(f"SELECT identified, granted FROM {store.table('events')}")
    assert rows == [(0, [])], "the row keeps the statistics and loses the identity"


class _ArrivesWhileIdle:
    """A queue that is empty when the committer first looks, then hands over ``items`` in order."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.looked = False

    def get_nowait(self) -> Any:
        if not self.looked or not self.items:
            self.looked = True
            raise queue.Empty
        return self.items.pop(0)

    def get(self, timeout: float | None = None) -> Any:
        return self.items.pop(0)


@pytest.mark.parametrize(("window", "slept"), [(0.0, []), (0.002, [0.002])])
def test_an_idle_committer_sleeps_through_its_window_only_when_one_is_set(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, window: float, slept: list[float]
) -> None:
    settings = make_settings(commit_window=window)
    record = _record("visit-0")
    stop = Command("stop", 7.0, None)
    source = _ArrivesWhileIdle([record, stop])
    writer = Writer(
        source,  # type: ignore[arg-type]
        connect=lambda: open_store(CHDB_URL, settings.database),
        rows=RowBuilder(settings, SaltStore(settings.keys_dir)),
        config=WriterConfig.from_settings(settings),
    )  # never started: only its committer's loop runs, here
    sleeps: list[float] = []
    monkeypatch.setattr(committer_module, "time", SimpleNamespace(sleep=sleeps.append, perf_counter=time.perf_counter))
    groups: list[list[Any]] = []

    def handle(items: list[Any]) -> float | None:
        groups.append(items)
        return 7.0 if isinstance(items[-1], Command) else None

    monkeypatch.setattr(writer.committer, "_handle", handle)
    assert writer.committer.loop() == 7.0
    assert sleeps == slept
    assert len(groups) == 1, "the record and the stop behind it are one group"
    assert groups[0][0] is record and groups[0][1] is stop
