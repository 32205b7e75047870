"""6. 가명정보 처리에 관한 사항: pseudonymised data identifies no one without the additional
information, and that information (the pseudonym key, the daily salts) is kept apart from it.

"추가 정보가 없이는 특정 개인을 알아볼 수 없도록 가명처리하여 … 원래의 상태로 복원하기 위한 추가
정보를 별도로 분리하여 보관ㆍ관리"
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

from consent_gateway.pseudonymize import SaltStore, consented_visitor
from consent_gateway.records import RawRecord
from consent_gateway.rows import RowBuilder
from consent_gateway.store import Store

from ..conftest import PSEUDONYM_KEY
from .support import BROWSER, VISITOR_IP, choose, flush, page

DAY = 86400


def _raw(ts: float, *, consent_id: str | None = None) -> RawRecord:
    return RawRecord.of(
        kind="visit",
        name="pageview",
        category="analytics",
        action="keep" if consent_id else "pseudonymise",
        ts=ts,
        site="test-site",
        host="site.example",
        path="/",
        query="",
        referrer="",
        user_agent=BROWSER.decode(),
        ip=VISITOR_IP[0],
        consent_id=consent_id,
        granted=frozenset({"necessary", "analytics"}) if consent_id else frozenset({"necessary"}),
    )


def test_6_same_visitor_on_two_days_gets_unlinkable_keys(make_gateway: Callable[..., Any], store: Store) -> None:
    """Without consent, one visitor (same IP, same browser) has a different key each day."""
    driver, _ = make_gateway()
    runtime = driver.app.runtime
    driver.request("GET", "/_consent/healthz")  # starts the runtime
    day1 = time.time() - 2 * DAY
    for ts in (day1, day1 + 60, day1 + DAY, day1 + DAY + 60):
        assert runtime.pipeline.submit(_raw(ts))
    flush(driver)
    rows = store.query_rows(
        f"SELECT toDate(ts) AS d, groupUniqArray(visitor), any(identified) "
        f"FROM {store.table('events')} GROUP BY d ORDER BY d"
    )
    assert len(rows) == 2
    (_, first, ident1), (_, second, ident2) = rows
    assert len(first) == 1 and len(second) == 1, "one visitor is one key within a day"
    assert first != second, "the same visitor must not be linkable across days"
    assert ident1 == ident2 == 0


def test_6_daily_salts_are_destroyed_after_48_hours(tmp_path: Any) -> None:
    """Once a day's salt is gone, nobody (not even the operator) can recompute that day's keys."""
    salts = SaltStore(tmp_path)
    day = dt.date(2026, 3, 1)
    start = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    salt = salts.salt_for(day, now=start)
    assert salts.destroy_expired(now=dt.datetime(2026, 3, 2, 23, 59, tzinfo=dt.UTC)) == []
    assert salts.destroy_expired(now=dt.datetime(2026, 3, 3, 0, 1, tzinfo=dt.UTC)) == ["2026-03-01"]
    assert "2026-03-01" not in salts.days()
    assert salt.hex() not in (tmp_path / "salts.json").read_text()


def test_6_consented_rows_are_found_with_the_separate_key_and_only_with_it(
    make_gateway: Callable[..., Any], make_settings: Callable[..., Any], store: Store
) -> None:
    driver, _ = make_gateway()
    _, cookie = choose(driver, {"action": "accept_all"})
    consent_id = json.loads(driver.request("GET", "/_consent/receipts", headers=[(b"cookie", cookie)]).body)[
        "consent_id"
    ]
    for path in ("/a", "/b", "/c"):
        page(driver, path, cookie=cookie)
    page(driver, "/someone-else")  # another visitor, no consent
    flush(driver)
    events = store.table("events")
    # With the pseudonym key (kept in the settings, never in ClickHouse) the rows are found …
    with_key = consented_visitor(PSEUDONYM_KEY.encode(), consent_id)
    assert with_key == RowBuilder(make_settings(), SaltStore(make_settings().keys_dir)).visitor_of(consent_id)
    found = store.query_rows(
        f"SELECT kind, path FROM {events} WHERE visitor = {{v:UInt64}} ORDER BY kind, path", {"v": with_key}
    )
    # the three pages, and the link row of the choice (it granted analytics; tests/test_visits.py)
    assert found == [("link", "/"), ("visit", "/a"), ("visit", "/b"), ("visit", "/c")]
    # … without it, the consent id (which the receipts do hold) leads to nothing.
    for guess in (
        consented_visitor(b"another-key-0123456789abcdefghijklmn", consent_id),
        consented_visitor(b"", consent_id),
    ):
        assert store.query_rows(f"SELECT count() FROM {events} WHERE visitor = {{v:UInt64}}", {"v": guess}) == [(0,)]
    dump = json.dumps(store.query_rows(f"SELECT * FROM {events}"), default=str)
    assert consent_id not in dump
    # The key itself is stored nowhere in the database or the data directory.
    for table in ("events", "consent_receipts"):
        text = json.dumps(store.query_rows(f"SELECT * FROM {store.table(table)}"), default=str)
        assert PSEUDONYM_KEY not in text
    data_dir = make_settings().data_dir
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert PSEUDONYM_KEY.encode() not in path.read_bytes(), path
