"""The journal on its own (frames, torn tails, tombstones, segments, orphans) and its replay into
the embedded ClickHouse exactly once."""

from __future__ import annotations

import datetime as dt
import queue
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from consent_gateway import Settings
from consent_gateway.pipeline import Journal, PipelineMetrics, Writer, WriterConfig
from consent_gateway.pipeline.journal import encode_rows
from consent_gateway.pipeline.messages import Command
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import RawRecord
from consent_gateway.rows import RowBuilder
from consent_gateway.store import Store, migrate, open_store

from .conftest import CHDB_URL


def _row(identified: int = 0, visitor: int = 1) -> list[Any]:
    """Enough of an event row for the journal: id, time, and the identified/visitor columns."""
    when = dt.datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=dt.UTC)
    return [uuid.uuid4(), when, "site", "event", "pageview", "analytics", identified, visitor]


def _crash(journal: Journal) -> None:
    """Leave the journal as a killed process would: file handle and lock dropped, nothing more."""
    assert journal._fh is not None
    journal._fh.close()
    journal._fh = None
    import os

    os.close(journal._lock_fd)
    journal._lock_fd = -1


def _lines(rows: list[list[Any]]) -> list[bytes]:
    return encode_rows(rows)[0]


def _append(journal: Journal, rows: list[list[Any]]) -> Any:
    return journal.append_group(*encode_rows(rows), [])


def test_rows_are_lines_clickhouse_reads_with_their_erasure_keys() -> None:
    row = _row(1, 2**63 + 5)
    lines, keys = encode_rows([row, _row(0, 9)])
    values = orjson.loads(lines[0])
    assert values[0] == str(row[0])
    assert values[1] == 1_795_608_000.123456, "seconds since the epoch, microseconds kept"
    assert values[6:8] == [1, 2**63 + 5]
    assert keys == [2**63 + 5, -1], "only identified rows carry their visitor as erasure key"


def test_acknowledged_groups_survive_a_crash_and_a_torn_tail_is_ignored(tmp_path: Path) -> None:
    journal, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    assert recovered.rows == 0
    first = [_row(), _row()]
    second = [_row()]
    _append(journal, first)
    _append(journal, second)
    journal.sync()
    segment = journal._segments[-1].path
    _crash(journal)
    # The process died halfway through writing a third frame (never fsynced, never acknowledged).
    with open(segment, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")

    again, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    assert again.directory == journal.directory, "the same directory is claimed again"
    assert [g.events for g in recovered.groups] == [_lines(first), _lines(second)]
    assert all(g.replayed for g in recovered.groups)
    again.close()


def test_committed_plans_are_not_replayed_and_their_segments_are_deleted(tmp_path: Path) -> None:
    journal, _ = Journal.open(tmp_path, segment_bytes=4096)
    groups = [_append(journal, [_row() for _ in range(20)]) for _ in range(10)]
    journal.sync()
    assert len(list(journal.directory.glob("*.seg"))) > 1, "small segments rotate"
    plan = journal.append_plan(groups[:6])
    journal.sync()
    journal.append_commit(plan)
    journal.release()
    left = journal.append_plan(groups[6:])
    journal.sync()
    _crash(journal)

    again, recovered = Journal.open(tmp_path, segment_bytes=4096)
    assert [p.token for p in recovered.plans] == [left.token], "only the uncommitted insert is repeated"
    assert [g.seq for g in recovered.plans[0].groups] == [g.seq for g in groups[6:]]
    assert recovered.groups == []
    again.append_commit(recovered.plans[0])
    again.close()
    assert list(again.directory.glob("*.seg")) == [], "a fully inserted journal leaves no segments"


def test_a_tombstone_keeps_a_withdrawn_visitors_rows_out_of_the_replay(tmp_path: Path) -> None:
    journal, _ = Journal.open(tmp_path, segment_bytes=1 << 20)
    _append(journal, [_row(1, 77), _row(0, 77), _row(1, 78)])
    journal.append_tombstone(77)
    journal.sync()
    _crash(journal)

    again, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    rows = [orjson.loads(line) for line in recovered.groups[0].events]
    assert [(r[6], r[7]) for r in rows] == [(0, 77), (1, 78)], "identified rows of visitor 77 are gone"
    assert recovered.groups[0].keys == [-1, 78]
    assert recovered.erased_rows == 1
    assert list(recovered.tombstones.values()) == [77], "its DELETE in ClickHouse is still owed"
    again.close()


def test_an_orphaned_worker_directory_is_adopted_and_removed(tmp_path: Path) -> None:
    live, _ = Journal.open(tmp_path, segment_bytes=1 << 20)
    orphan, _ = Journal.open(tmp_path, segment_bytes=1 << 20)
    assert orphan.directory != live.directory, "a locked directory belongs to a running worker"
    rows = [_row(), _row()]
    _append(orphan, rows)
    plan = orphan.append_plan([_append(orphan, [_row()])])
    orphan.sync()
    _crash(orphan)

    adopter, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    assert adopter.directory == orphan.directory or not orphan.directory.exists()
    assert [p.token for p in recovered.plans] == [plan.token], "the repeated insert keeps its token"
    assert [g.events for g in recovered.groups] == [_lines(rows)]
    live.close()
    adopter.close()


def _writer(settings: Settings, journal: Journal, recovered: Any, source: queue.SimpleQueue[Any]) -> Writer:
    return Writer(
        source,
        connect=lambda: open_store(CHDB_URL, settings.database),
        rows=RowBuilder(settings, SaltStore(settings.keys_dir)),
        config=WriterConfig.from_settings(settings, batch_size=100, flush_interval=0.05),
        journal=journal,
        recovered=recovered,
        metrics=PipelineMetrics(),
    )


def _record(marker: str) -> RawRecord:
    return RawRecord.of(
        kind="event",
        name="pageview",
        category="analytics",
        action="pseudonymise",
        ts=1_795_000_000.0,
        site="test-site",
        host="example.test",
        path="/p",
        query="",
        referrer="",
        user_agent="Mozilla/5.0",
        ip="203.0.113.9",
        consent_id=None,
        granted=frozenset(),
        props={"m": marker},
    )


def _flush(source: queue.SimpleQueue[Any], timeout: float = 30.0) -> bool:
    done = threading.Event()
    result: list[Any] = []

    def resolve(value: Any) -> None:
        result.append(value)
        done.set()

    source.put(Command("flush", None, resolve))
    assert done.wait(timeout), "the writer did not answer the flush"
    return bool(result[0])


def _replay(settings: Settings, directory: Path, *, expect_rows: int | None = None) -> tuple[Journal, Writer]:
    """Open a journal as a restarted gateway would, let a writer insert it all, and stop that writer."""
    journal, recovered = Journal.open(directory, segment_bytes=1 << 20)
    if expect_rows is not None:
        assert recovered.rows == expect_rows
    source: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = _writer(settings, journal, recovered, source)
    writer.start()
    assert _flush(source)
    source.put(Command("stop", 0.0, None))
    writer.join(30)
    return journal, writer


def _migrated(make_settings: Callable[..., Settings], store: Store) -> tuple[Settings, RowBuilder]:
    settings = make_settings()
    migrate(store)
    return settings, RowBuilder(settings, SaltStore(settings.keys_dir))


def _refused(line: bytes) -> bytes:
    """An event line ClickHouse refuses: text where its UInt16 status goes."""
    refused = line.replace(b'"/p",0,0', b'"/p","not a status",0')
    assert refused != line
    return refused


def test_an_insert_repeated_after_a_crash_lands_exactly_once(
    make_settings: Callable[..., Settings], store: Store, tmp_path: Path
) -> None:
    """The crash window that matters: ClickHouse took the insert, the commit entry never made it."""
    settings, rows = _migrated(make_settings, store)
    journal, _ = Journal.open(tmp_path / "journal", segment_bytes=1 << 20)
    groups = []
    for i in range(4):
        lines, keys = rows.event_lines([_record(f"m{i}-{j}") for j in range(5)])
        groups.append(journal.append_group(list(lines), list(keys), []))
    plan = journal.append_plan(groups)
    journal.sync()
    events = [r for g in groups for r in g.events]
    from consent_gateway.pipeline.inserter import EVENT_NAMES, INSERT_DEDUP_SETTINGS

    as_the_writer = {**INSERT_DEDUP_SETTINGS, "insert_deduplication_token": f"{plan.token}:e"}
    store.insert_lines("events", events, EVENT_NAMES, settings=as_the_writer)
    rollup = f"SELECT sum(hits) FROM {store.table('events_daily')}"
    assert store.query_rows(rollup)[0][0] == 20
    lines, keys = rows.event_lines([_record("after")])
    journal.append_group(lines, keys, [])  # acknowledged, never inserted
    journal.sync()
    _crash(journal)

    journal, writer = _replay(settings, tmp_path / "journal", expect_rows=21)
    counts = store.query_rows(
        f"SELECT count(), uniqExact(event_id), countIf(props LIKE '%after%') FROM {store.table('events')}"
    )[0]
    assert counts == (21, 21, 1), "20 rows once (the repeat was deduplicated) plus the one never inserted"
    assert store.query_rows(rollup)[0][0] == 21, "the daily rollup counted the repeated insert once too"
    assert writer.stats.replayed == 21
    assert list(journal.directory.glob("*.seg")) == [], "everything is in ClickHouse: the journal is empty"


def test_a_worker_that_does_not_come_back_has_its_journal_adopted(tmp_path: Path) -> None:
    first, _ = Journal.open(tmp_path, segment_bytes=1 << 20)
    second, _ = Journal.open(tmp_path, segment_bytes=1 << 20)
    a_rows, b_rows = [_row(), _row()], [_row()]
    _append(first, a_rows)
    plan = second.append_plan([_append(second, b_rows)])
    second.append_tombstone(99)
    for journal in (first, second):
        journal.sync()
        _crash(journal)

    # Two workers died; one comes back and takes over both directories.
    survivor, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    all_groups = [g.events for g in recovered.groups] + [g.events for p in recovered.plans for g in p.groups]
    assert sorted(all_groups, key=len) == [_lines(b_rows), _lines(a_rows)], "both workers' rows, once each"
    assert [p.token for p in recovered.plans] == [plan.token], "the adopted plan keeps its token"
    assert list(recovered.tombstones.values()) == [99], "and the adopted tombstone is still owed"
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [survivor.directory], "the orphan is removed"
    survivor.close()
    again, recovered = Journal.open(tmp_path, segment_bytes=1 << 20)
    assert recovered.rows == 3, "the adopted rows are durable in the survivor's journal"
    again.close()


def test_a_row_clickhouse_refuses_is_isolated_and_the_rest_of_its_batch_is_stored_once(
    make_settings: Callable[..., Settings], store: Store, tmp_path: Path
) -> None:
    """One invalid row must not hold back, nor take down, the rows journaled with it."""
    settings, rows = _migrated(make_settings, store)
    journal, _ = Journal.open(tmp_path / "journal", segment_bytes=1 << 20)
    lines, keys = rows.event_lines([_record(f"ok-{i}") for i in range(9)])
    poisoned = list(lines)
    poisoned[4] = _refused(poisoned[4])
    journal.append_group(poisoned, list(keys), [])
    journal.sync()
    _crash(journal)

    journal, writer = _replay(settings, tmp_path / "journal")
    by_marker = f"SELECT JSONExtractString(props, 'm') AS m, count() FROM {store.table('events')} GROUP BY m"
    assert dict(store.query_rows(by_marker)) == {f"ok-{i}": 1 for i in range(9) if i != 4}, "every other row, once"
    assert writer.stats.rejected == 1 and writer.stats.inserted_events == 8
    assert b'cg_pipeline_rejected_rows_total{table="events"} 1.0' in writer.metrics.render()
    assert list(journal.directory.glob("*.seg")) == [], "nothing is left to retry"

    # A crash before the plan's commit entry repeats the isolation with the same tokens: nothing twice.
    from consent_gateway.pipeline.inserter import EVENT_NAMES

    assert writer.inserter.insert_lines(store, "events", EVENT_NAMES, poisoned, "replayed-token:e") == 1
    assert writer.inserter.insert_lines(store, "events", EVENT_NAMES, poisoned, "replayed-token:e") == 1
    counts = dict(store.query_rows(by_marker))
    assert counts == {f"ok-{i}": 2 for i in range(9) if i != 4}, "the second pass was deduplicated"


def test_a_table_that_refuses_every_row_drops_nothing_and_keeps_the_plan(
    make_settings: Callable[..., Settings], store: Store, tmp_path: Path
) -> None:
    """Row after row refused means the table changed (a column's type): retry, never drop them all."""
    from consent_gateway.errors import StoreError
    from consent_gateway.pipeline.inserter import EVENT_NAMES, MAX_REFUSED

    settings, rows = _migrated(make_settings, store)
    bad = [_refused(line) for line in rows.event_lines([_record(f"bad-{i}") for i in range(MAX_REFUSED + 4)])[0]]
    source: queue.SimpleQueue[Any] = queue.SimpleQueue()
    journal, recovered = Journal.open(tmp_path / "journal", segment_bytes=1 << 20)
    writer = _writer(settings, journal, recovered, source)
    try:
        writer.inserter._refused_in_plan = 0
        writer.inserter.insert_lines(store, "events", EVENT_NAMES, bad, "all-bad:e")
    except StoreError as exc:
        assert "check the table's schema" in str(exc)
    else:
        raise AssertionError("a table refusing every row must fail the insert, to be retried")
    assert writer.stats.rejected == 0
    assert store.query_rows(f"SELECT count() FROM {store.table('events')}") == [(0,)]
    journal.close()
