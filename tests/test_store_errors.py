"""ClickHouse error codes come from the driver's exception, for the embedded engine and a server."""

from __future__ import annotations

import datetime as dt
import socket
import uuid

import pytest

from consent_gateway.errors import StoreError
from consent_gateway.store import EVENT_COLUMNS, Store, error_code, is_data_error, open_store
from tests.clickhouse_http_server import FixtureServer


def _refusal(store: Store, lines: list[bytes], **kwargs: object) -> StoreError:
    store.command(f"CREATE DATABASE IF NOT EXISTS `{store.database}`")
    store.command(f"CREATE TABLE IF NOT EXISTS {store.table('numbers')} (n UInt32) ENGINE = MergeTree ORDER BY n")
    with pytest.raises(StoreError) as caught:
        store.insert_lines("numbers", lines, ["n"], **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_the_embedded_engine_names_a_parse_error_by_its_code(store: Store) -> None:
    plain = _refusal(store, [b'["not a number"]'])
    converted = _refusal(store, [b'["not a number"]'], column_types=["UInt32"])
    assert error_code(plain) == 27 and is_data_error(plain), "CANNOT_PARSE_INPUT_ASSERTION_FAILED"
    assert error_code(converted) == 27 and is_data_error(converted)
    with pytest.raises(StoreError) as missing:
        store.command(f"SELECT * FROM {store.table('no_such_table')}")
    assert error_code(missing.value) == 60, "UNKNOWN_TABLE"
    assert not is_data_error(missing.value), "a missing table is the server's state, not the data's"


def test_a_server_names_a_parse_error_by_its_code(clickhouse: FixtureServer) -> None:
    store = open_store(clickhouse.url, "default")
    try:
        error = _refusal(store, [b'["not a number"]'])
        assert error_code(error) == 27 and is_data_error(error)
    finally:
        store.close()


def test_an_unreachable_server_has_no_code_and_is_not_blamed_on_the_data() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the driver fails to connect, before ClickHouse could answer.
    with pytest.raises(StoreError) as caught:
        store = open_store(f"http://127.0.0.1:{port}", "default", connect_timeout=1)
        store.command("SELECT 1")
    assert error_code(caught.value) == 0
    assert not is_data_error(caught.value)
    assert error_code(ValueError("Code: 27. looks like ClickHouse but is not")) == 0, "text is never parsed"


def test_the_gateways_statements_read_and_erase_what_they_name(store: Store) -> None:
    from consent_gateway.store import migrate
    from consent_gateway.store.statements import (
        erase_visitor,
        identified_rows,
        ping,
        receipts_of,
        stored_event_names,
    )

    migrate(store)
    ping(store)
    names = [n for n, _ in EVENT_COLUMNS]

    def row(name: str, visitor: int, identified: int) -> list[object]:
        values: dict[str, object] = {n: "" for n in names}
        values.update(event_id=uuid.uuid4(), ts=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), site="s", kind="event",
                      name=name, identified=identified, visitor=visitor, granted=[], status=0, duration_ms=0,
                      is_bot=0)
        return [values[n] for n in names]

    rows = [row("signup", 7, 1), row("signup", 7, 1), row("login", 7, 0), row("login", 8, 1)]
    store.insert("events", rows, names, [t for _, t in EVENT_COLUMNS])
    assert sorted(stored_event_names(store, "s", 10)) == ["login", "signup"]
    assert stored_event_names(store, "other", 10) == []
    assert identified_rows(store, 7) == 2
    erase_visitor(store, 7)
    assert identified_rows(store, 7) == 0
    assert identified_rows(store, 8) == 1, "only the named visitor's identified rows go"
    assert store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0] == 2
    assert receipts_of(store, "s", "no-such-consent") == []
