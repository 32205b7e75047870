"""``consent-gateway audit``: receipts for a date range and the pseudonymisation record, on the real engine."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from consent_gateway import Settings, SettingsError
from consent_gateway.audit import add_audit_parser, processing_record, record_markdown
from consent_gateway.policy import PSEUDONYMISE
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import ReceiptRecord
from consent_gateway.rows import RowBuilder
from consent_gateway.store import Store
from consent_gateway.store.schema import EVENT_COLUMNS, RECEIPT_COLUMNS, migrate

from .conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from .test_my_data import _record

DAY = 86400
JAN_10 = dt.datetime(2026, 1, 10, 9, 30, tzinfo=dt.UTC).timestamp()


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONSENT_GATEWAY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path, database: str, store: Store) -> Path:
    """Receipts over three days (one a withdrawal), and pseudonymised rows of today."""
    path = tmp_path / "consent.toml"
    path.write_text(
        f'site_id = "test-site"\nclickhouse_url = "{CHDB_URL}"\ndatabase = "{database}"\n'
        f'data_dir = "{tmp_path / "data"}"\nsecret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n',
        encoding="utf-8",
    )
    settings = Settings.load(path)
    migrate(store)
    rows = RowBuilder(settings, SaltStore(settings.keys_dir))
    receipts = [
        ReceiptRecord(
            ts=JAN_10 + i * DAY,
            site=site,
            consent_id=cid,
            version="1.0",
            categories=cats,
            method=method,
            banner_hash="h",
            locale="ko",
            ip="203.0.113.5",
            user_agent="Mozilla/5.0",
        )
        for i, site, cid, cats, method in (
            (0, "test-site", "cid-a", ("necessary", "analytics"), "custom"),
            (1, "test-site", "cid-b", ("necessary",), "reject_all"),
            (2, "test-site", "cid-a", ("necessary",), "withdraw"),
            (1, "other-site", "cid-z", ("necessary",), "accept_all"),
        )
    ]
    store.insert_lines("consent_receipts", [rows.receipt_line(r) for r in receipts], [n for n, _ in RECEIPT_COLUMNS])
    lines, _ = rows.event_lines([_record(PSEUDONYMISE, None, f"/p{i}") for i in range(4)])
    store.insert_lines("events", lines, [n for n, _ in EVENT_COLUMNS])
    return path


def _run(argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    assert args.func(args, out) == 0
    return out.getvalue()


def test_receipts_csv_for_a_range(config: Path) -> None:
    text = _run(["audit", "receipts", "--from", "2026-01-10", "--to", "2026-01-11", "--config", str(config)])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["consent_id"], r["method"]) for r in rows] == [("cid-a", "custom"), ("cid-b", "reject_all")]
    assert rows[0]["categories"] == "necessary|analytics" and rows[0]["ts"] == "2026-01-10T09:30:00.000Z"
    assert rows[0]["ip_prefix"] == "203.0.113.0/24" and rows[0]["receipt_id"]


def test_receipts_json_of_one_consent_id(config: Path, tmp_path: Path) -> None:
    argv = ["audit", "receipts", "--from", "2026-01-01", "--to", "2026-01-31", "--consent-id", "cid-a"]
    data = json.loads(_run([*argv, "--format", "json", "--config", str(config)]))
    assert [r["method"] for r in data] == ["custom", "withdraw"]
    out = tmp_path / "proof.json"
    _run([*argv, "--format", "json", "--config", str(config), "--output", str(out)])
    assert json.loads(out.read_text("utf-8")) == data


def test_receipts_refuse_a_backwards_range(config: Path) -> None:
    with pytest.raises(SettingsError, match="on or after --from"):
        _run(["audit", "receipts", "--from", "2026-02-01", "--to", "2026-01-01", "--config", str(config)])
    with pytest.raises(SettingsError, match="YYYY-MM-DD"):
        _run(["audit", "receipts", "--from", "yesterday", "--to", "2026-01-01", "--config", str(config)])


def test_pseudonymisation_record(config: Path, store: Store) -> None:
    settings = Settings.load(config)
    record = processing_record(settings, store, SaltStore(settings.keys_dir))
    assert {p["records"]: p["without_consent"] for p in record["purposes"]}["marketing"] == "drop"
    (salt,) = record["salts"]  # today's: the salt the rows were written with
    assert salt["salt_exists"] and salt["pseudonymised_rows"] == 4
    created = dt.datetime.fromisoformat(salt["created_from"])
    assert dt.datetime.fromisoformat(salt["destroyed_by"]) - created == dt.timedelta(hours=48)
    assert record["erasures"] == [{"month": "2026-01", "withdrawals": 1, "consent_ids": 1}]
    assert record["retention"]["pseudonymised_events_months"] == 3 and record["retention"]["salt_hours"] == 48
    assert any(i["item"] == "ip_prefix" for i in record["items"])
    # After the salt's destruction the record still shows the day, its rows, and that no salt exists.
    SaltStore(settings.keys_dir).destroy_expired(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    (salt,) = processing_record(settings, store, SaltStore(settings.keys_dir))["salts"]
    assert not salt["salt_exists"] and salt["pseudonymised_rows"] == 4
    text = record_markdown(record)
    assert text.startswith("# Pseudonymised data processing record: test-site") and "| 2026-01 | 1 | 1 |" in text


def test_pseudonymisation_command_formats(config: Path) -> None:
    assert "## Salts" in _run(["audit", "pseudonymisation", "--config", str(config)])
    data = json.loads(_run(["audit", "pseudonymisation", "--format", "json", "--config", str(config)]))
    assert data["site"] == "test-site"
