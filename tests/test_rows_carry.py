"""Rows built a record at a time (one per group commit) equal rows built in one batch.

The row builder carries the last record's derived values (who sent it, where from) to its next
call; a record that differs in any of their inputs must still get its own.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from consent_gateway import Settings
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import RawRecord
from consent_gateway.rows import RowBuilder

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
NOON = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


def _raw(**changes: Any) -> RawRecord:
    values: dict[str, Any] = {
        "kind": "visit", "name": "pageview", "category": "analytics", "action": "keep", "ts": NOON,
        "site": "test-site", "host": "testserver", "path": "/", "query": "", "referrer": "",
        "user_agent": CHROME, "ip": "203.0.113.7", "consent_id": "c1",
        "granted": frozenset({"necessary", "analytics", "marketing"}), "status": 200,
    }  # fmt: skip
    values.update(changes)
    return RawRecord.of(**values)


VARIANTS = [
    _raw(),
    _raw(ip="198.51.100.9"),
    _raw(user_agent=FIREFOX),
    _raw(consent_id="c2"),
    _raw(action="pseudonymise", consent_id=None, granted=frozenset()),
    _raw(ts=NOON - 86400, action="pseudonymise", consent_id=None, granted=frozenset()),
    _raw(granted=frozenset({"necessary"})),
    _raw(path="/students/010-1234-5678"),
    _raw(query="utm_source=mail&gclid=abc"),
    _raw(referrer="https://search.example/q"),
    _raw(host="other.example", referrer="https://testserver/x"),  # an outside referrer once the host differs
]


def _without_ids(lines: list[bytes]) -> list[list[Any]]:
    return [orjson.loads(line)[1:] for line in lines]


def test_one_record_per_call_gives_the_rows_of_one_batch(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    batched = RowBuilder(settings, SaltStore(tmp_path / "salts"))
    single = RowBuilder(settings, SaltStore(tmp_path / "salts"))
    for order in itertools.islice(itertools.permutations(range(len(VARIANTS))), 0, 400, 37):
        records = [VARIANTS[i] for i in order] + [VARIANTS[order[-1]]]  # the same record twice in a row, too
        lines, keys = batched.event_lines(records)
        one_by_one = [single.event_lines([record]) for record in records]
        assert _without_ids([line for ls, _ in one_by_one for line in ls]) == _without_ids(lines)
        assert [k for _, ks in one_by_one for k in ks] == keys
    rows = _without_ids(batched.event_lines(VARIANTS)[0])
    assert len({tuple(map(str, row)) for row in rows}) == len(VARIANTS)  # every variant's row is its own
