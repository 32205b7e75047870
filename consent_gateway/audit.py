"""``consent-gateway audit``: proof of consent and the record of pseudonymised-data processing.

``audit receipts --from --to [--consent-id]`` exports consent receipts (CSV or JSON) for a regulator.
``audit pseudonymisation`` prints the processing record the Enforcement Decree of PIPA (Art. 29-5)
asks for: purposes, items and how each is processed, recipients, retention, the salts' creation and
destruction times, and withdrawals (erasures) with counts. ``add_audit_parser(sub)`` adds both.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import SettingsError
from .pseudonymize import SALT_LIFETIME, SaltStore
from .settings import Settings
from .store.client import Store
from .store.schema import INVENTORY_TABLE, ROLLUP_TTL_MONTHS
from .store.statements import pseudonymised_rows_by_day, receipts_between, withdrawals_by_month

RECEIPT_FIELDS = (
    "receipt_id",
    "ts",
    "consent_id",
    "version",
    "categories",
    "method",
    "banner_hash",
    "locale",
    "ip_prefix",
    "browser",
    "os",
    "device",
    "child",
    "guardian_categories",
)
_LISTS = ("categories", "guardian_categories")
MAX_RANGE_DAYS = 3660


def _date(key: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SettingsError(key, value, "write the date as YYYY-MM-DD, e.g. 2026-01-31") from None


def read_receipts(
    store: Store, site: str, start: dt.date, end: dt.date, consent_id: str | None = None
) -> list[dict[str, Any]]:
    """Receipts of ``site`` from ``start`` to ``end`` (both inclusive, UTC days), oldest first."""
    if end < start:
        raise SettingsError("--to", end.isoformat(), f"use a date on or after --from ({start.isoformat()})")
    if (end - start).days > MAX_RANGE_DAYS:
        raise SettingsError("--to", end.isoformat(), f"export at most {MAX_RANGE_DAYS} days at a time")
    rows = receipts_between(store, site, start, end, consent_id)
    return [
        {f: _iso_ms(r["ts_ms"]) if f == "ts" else list(r[f]) if f in _LISTS else r[f] for f in RECEIPT_FIELDS}
        for r in rows
    ]


def _iso_ms(ms: int) -> str:
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def write_receipts(rows: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """Receipts as CSV (categories joined by '|') or as a JSON array."""
    if fmt == "json":
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    writer = csv.writer(out)
    writer.writerow(RECEIPT_FIELDS)
    for r in rows:
        writer.writerow(["|".join(r[f]) if f in _LISTS else r[f] for f in RECEIPT_FIELDS])


# -- the processing record ----------------------------------------------------------------------

# What a pseudonymised row holds, item by item, and how each was processed (policy.py, pseudonymize.py).
ITEMS: tuple[tuple[str, str], ...] = (
    (
        "visitor",
        "keyed hash of a daily random salt, the site, the full IP address (never stored) and the user agent; "
        "unlinkable once the salt is destroyed",
    ),
    ("ip_prefix", "IPv4 /24 or IPv6 /48 network; the full address is never stored"),
    ("browser, browser_version, os, device, is_bot", "reduced from the user agent; the user agent is never stored"),
    ("path", "page path with e-mail- and phone-like segments replaced by [redacted]"),
    ("referrer_host, utm_*", "referrer host name only; campaign parameters as sent"),
    ("click_id", "never kept (emptied)"),
    ("granted", "never kept (empty)"),
    ("props", "event properties with personal-looking values removed"),
    ("ts, kind, name, category, status, duration_ms", "kept as recorded"),
)


@dataclass(frozen=True, slots=True)
class SaltRecord:
    """One day's salt: used from the start of its day, destroyed 48 hours after it."""

    day: str
    created_from: dt.datetime
    destroyed_by: dt.datetime
    exists: bool
    pseudonymised_rows: int

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "created_from": self.created_from.isoformat(),
            "destroyed_by": self.destroyed_by.isoformat(),
            "salt_exists": self.exists,
            "pseudonymised_rows": self.pseudonymised_rows,
        }


def _salt_records(existing: set[str], per_day: dict[str, int]) -> list[SaltRecord]:
    """One record per day that has a salt or pseudonymised rows (``per_day``: rows of each day)."""
    salt_records = []
    for day in sorted(existing | set(per_day)):
        try:
            start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
        except ValueError:
            continue
        salt_records.append(SaltRecord(day, start, start + SALT_LIFETIME, day in existing, per_day.get(day, 0)))
    return salt_records


def _purposes(settings: Settings) -> list[dict[str, str]]:
    return [
        {
            "records": kind,
            "with_consent": granted,
            "without_consent": refused,
            "purpose": "visit and event statistics of the site without identifying visitors"
            if refused == "pseudonymise"
            else "not processed without consent",
        }
        for kind, granted, refused in settings.policy_matrix
    ]


def processing_record(
    settings: Settings, store: Store, salts: SaltStore, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The pseudonymised-data processing record of ``settings.site_id`` as a JSON-ready dict."""
    now = now or dt.datetime.now(dt.UTC)
    site = settings.site_id
    salt_records = _salt_records(set(salts.days()), pseudonymised_rows_by_day(store, site))
    withdrawals = withdrawals_by_month(store, site)
    return {
        "site": site,
        "generated_at": now.isoformat(),
        "controller_policy": settings.policy_url,
        "purposes": _purposes(settings),
        "items": [{"item": item, "processing": how} for item, how in ITEMS],
        "use": "aggregate statistics (visits, events, campaigns); the analytics API applies k-anonymity "
        f"(k = {settings.k_anonymity}) to every breakdown",
        "recipients": "none: rows stay in the site's own ClickHouse database "
        f"({settings.database!r}); teams with the marketing role read views without visitor keys",
        "retention": {
            "pseudonymised_events_months": settings.events_retention_months,
            "anonymous_daily_rollup_months": ROLLUP_TTL_MONTHS,
            f"{INVENTORY_TABLE}_months": settings.events_retention_months,
            "consent_receipts_years": settings.receipts_retention_years,
            "salt_hours": int(SALT_LIFETIME.total_seconds() // 3600),
        },
        "salts": [s.as_json() for s in salt_records],
        "erasures": [
            {"month": month[:7], "withdrawals": count, "consent_ids": ids} for month, count, ids in withdrawals
        ],
        "erasure_note": "a withdrawal erases that consent id's identifiable rows; pseudonymised rows are not "
        "linked to it and stay until their retention ends",
    }


def record_markdown(record: dict[str, Any]) -> str:
    """The processing record as a Markdown document."""
    out = [
        f"# Pseudonymised data processing record: {record['site']}",
        "",
        f"Generated {record['generated_at']}. Privacy policy: {record['controller_policy']}",
        "",
        "## Purposes",
        "",
        "| records | with consent | without consent | purpose |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {p['records']} | {p['with_consent']} | {p['without_consent']} | {p['purpose']} |"
        for p in record["purposes"]
    ]
    out += ["", "## Items and processing", "", "| item | processing |", "|---|---|"]
    out += [f"| {i['item']} | {i['processing']} |" for i in record["items"]]
    out += ["", "## Use", "", record["use"], "", "## Recipients", "", record["recipients"], "", "## Retention", ""]
    out += [f"- {k}: {v}" for k, v in record["retention"].items()]
    out += [
        "",
        "## Salts",
        "",
        "| day | created from | destroyed by | salt exists | pseudonymised rows |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {s['day']} | {s['created_from']} | {s['destroyed_by']} | {'yes' if s['salt_exists'] else 'no'} "
        f"| {s['pseudonymised_rows']} |"
        for s in record["salts"]
    ]
    out += ["", "## Erasures", "", "| month | withdrawals | consent ids |", "|---|---|---|"]
    out += [f"| {e['month']} | {e['withdrawals']} | {e['consent_ids']} |" for e in record["erasures"]]
    out += ["", record["erasure_note"], ""]
    return "\n".join(out)


# -- the command ------------------------------------------------------------------------------------


def add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``audit receipts`` and ``audit pseudonymisation`` to the subcommands ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser("audit", help="exports for audits: consent receipts, processing record")
    audit = p.add_subparsers(dest="audit_command", required=True)
    r = audit.add_parser("receipts", help="consent receipts of a date range (proof of consent), as CSV or JSON")
    r.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD (UTC)")
    r.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD (UTC), included")
    r.add_argument("--consent-id", help="only the receipts of this consent id")
    r.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    r.add_argument("--output", help="write to this file instead of standard output")
    s = audit.add_parser("pseudonymisation", help="the pseudonymised-data processing record (Decree Art. 29-5)")
    s.add_argument("--format", choices=("markdown", "json"), default="markdown", help="markdown (default) or json")
    s.add_argument("--output", help="write to this file instead of standard output")
    for q in (r, s):
        q.add_argument("--config", help="settings TOML (default: CONSENT_GATEWAY_CONFIG)")
        q.add_argument("--data", help="data directory (overrides data_dir)")
    p.set_defaults(func=audit_command)
    return p


def audit_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``audit receipts`` or ``audit pseudonymisation``."""
    from .store import open_store

    overrides: dict[str, Any] = {}
    if getattr(args, "data", None):
        overrides["data_dir"] = Path(args.data).resolve()
    settings = Settings.load(getattr(args, "config", None), **overrides)
    store = open_store(settings.clickhouse_dsn, settings.database)
    target = open(args.output, "w", encoding="utf-8", newline="") if args.output else None
    stream = target or out or sys.stdout
    try:
        if args.audit_command == "receipts":
            rows = read_receipts(
                store, settings.site_id, _date("--from", args.start), _date("--to", args.end), args.consent_id
            )
            write_receipts(rows, args.format, stream)
            if target is not None:
                print(f"wrote {len(rows)} receipts to {args.output}", file=sys.stderr)
        else:
            record = processing_record(settings, store, SaltStore(settings.keys_dir))
            if args.format == "json":
                json.dump(record, stream, ensure_ascii=False, indent=2)
                stream.write("\n")
            else:
                stream.write(record_markdown(record))
    finally:
        if target is not None:
            target.close()
        store.close()
    return 0
