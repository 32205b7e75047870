"""4. 개인정보 파기 — 법령에 따른 보관: 서비스 방문 기록 (통신비밀보호법) 3개월.

Visit records are kept three months and no longer. The events table carries
``TTL toDateTime(ts) + toIntervalMonth(3) DELETE`` with ``ttl_only_drop_parts = 1`` and one
partition per UTC day, so a day's part is dropped as a whole once its last row is three calendar
months old: retention is exact to the day (a row lives at most three months plus the rest of its
day). ClickHouse adds calendar months and clamps to the end of the target month, so a row of
31 August expires on 30 November, the same day as one of 30 August (checked below).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from consent_gateway.records import RawRecord
from consent_gateway.store import Store

from .support import BROWSER, flush

DAY = dt.timedelta(days=1)


def _visit(ts: dt.datetime, path: str) -> RawRecord:
    return RawRecord.of(
        kind="visit",
        name="pageview",
        category="analytics",
        action="pseudonymise",
        ts=ts.timestamp(),
        site="test-site",
        host="site.example",
        path=path,
        query="",
        referrer="",
        user_agent=BROWSER.decode(),
        ip="203.0.113.5",
        consent_id=None,
        granted=frozenset({"necessary"}),
    )


def test_4_service_visit_records_kept_3_months(make_gateway: Callable[..., Any], store: Store) -> None:
    driver, _ = make_gateway()
    driver.request("GET", "/_consent/healthz")  # starts the runtime: tables, writer
    events = store.table("events")
    # "Three months ago", by the same calendar arithmetic the TTL uses.
    [(boundary,)] = store.query_rows("SELECT toDateTime(now(), 'UTC') - toIntervalMonth(3)")
    boundary = boundary.replace(tzinfo=dt.UTC) if boundary.tzinfo is None else boundary
    # Near a month's end the clamping makes the day after the boundary expire with it (today 30
    # November: 31 August + 3 months = 30 November, now): the row "a day inside" is then the first
    # day after the boundary whose row, by the TTL's own arithmetic, has not expired yet.
    inside = boundary + DAY
    for _ in range(3):
        [(alive,)] = store.query_rows(
            "SELECT toDateTime({ts:DateTime}, 'UTC') + toIntervalMonth(3) > now()", {"ts": inside.replace(tzinfo=None)}
        )
        if alive:
            break
        inside += DAY
    rows = {
        "/kept-today": boundary + 92 * DAY,
        "/kept-2-months": boundary + 30 * DAY,
        "/kept-3-months-less-a-day": inside,
        "/gone-3-months-and-a-day": boundary - DAY,
        "/gone-4-months": boundary - 31 * DAY,
        "/gone-a-year": boundary - 270 * DAY,
    }
    for path, ts in rows.items():
        assert driver.app.runtime.pipeline.submit(_visit(ts, path))
    flush(driver)
    # Rows already expired when they arrive (a journal replayed late) are not even written.
    store.command(f"OPTIMIZE TABLE {events} FINAL")
    left = {r[0] for r in store.query_rows(f"SELECT path FROM {events}")}
    assert left == {p for p in rows if p.startswith("/kept")}
    ddl = store.query_rows(f"SHOW CREATE TABLE {events}")[0][0]
    assert "toIntervalMonth(3)" in ddl and "ttl_only_drop_parts = 1" in ddl and "PARTITION BY toDate(ts)" in ddl


def test_4_month_arithmetic_clamps_to_the_end_of_the_month(store: Store) -> None:
    """The boundary behaviour stated in this module's docstring, measured on the engine itself."""
    [(aug31, aug30, may31, back)] = store.query_rows(
        "SELECT toDateTime('2026-08-31 10:00:00', 'UTC') + toIntervalMonth(3),"
        " toDateTime('2026-08-30 10:00:00', 'UTC') + toIntervalMonth(3),"
        " toDateTime('2026-05-31 10:00:00', 'UTC') + toIntervalMonth(3),"
        " toDateTime('2026-11-30 10:00:00', 'UTC') - toIntervalMonth(3)"
    )
    assert (aug31.date(), aug30.date(), may31.date(), back.date()) == (
        dt.date(2026, 11, 30),
        dt.date(2026, 11, 30),
        dt.date(2026, 8, 31),
        dt.date(2026, 8, 30),
    )


def test_4_retention_follows_the_setting_and_receipts_outlive_visits(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    """Rows stored under 3 months' retention go at the next merge once the setting says 2, and
    consent receipts (proof of consent) are kept 5 years, not 3 months."""
    first, _ = make_gateway()
    first.request("GET", "/_consent/healthz")
    events = store.table("events")
    [(two_months,)] = store.query_rows("SELECT toDateTime(now(), 'UTC') - toIntervalMonth(2)")
    two_months = two_months.replace(tzinfo=dt.UTC) if two_months.tzinfo is None else two_months
    for path, ts in (("/kept", two_months + DAY), ("/gone", two_months - DAY)):
        assert first.app.runtime.pipeline.submit(_visit(ts, path))
    flush(first)
    first.close()
    assert {r[0] for r in store.query_rows(f"SELECT path FROM {events}")} == {"/kept", "/gone"}
    second, _ = make_gateway(events_retention_months=2)
    second.request("GET", "/_consent/healthz")  # migrations bring the TTL in line at start
    store.command(f"OPTIMIZE TABLE {events} FINAL")
    assert {r[0] for r in store.query_rows(f"SELECT path FROM {events}")} == {"/kept"}
    assert "toIntervalMonth(2)" in store.query_rows(f"SHOW CREATE TABLE {events}")[0][0]
    receipts = store.query_rows(f"SHOW CREATE TABLE {store.table('consent_receipts')}")[0][0]
    assert "toIntervalYear(5)" in receipts
