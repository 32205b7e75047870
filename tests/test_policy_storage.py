"""What lands in ClickHouse for each cell of the policy matrix, and how long it stays there."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from msgspec import structs

from consent_gateway import ConsentGateway, Settings
from consent_gateway.store import EVENT_COLUMNS, RECEIPT_COLUMNS, Store, migrate
from consent_gateway.store.schema import MIGRATIONS
from tests.conftest import PSEUDONYM_KEY, SECRET
from tests.gateway_support import client_for, sign_cookie, site_app

if TYPE_CHECKING:
    from consent_gateway.records import RawRecord
    from consent_gateway.rows import RowBuilder


def _stored_line(rows: RowBuilder, raw: RawRecord) -> tuple[bytes, int]:
    """One record's stored line and erasure key, as the writer builds them."""
    lines, keys = rows.event_lines([raw])
    return lines[0], keys[0]


def _stored_row(rows: RowBuilder, raw: RawRecord) -> list[Any]:
    """One record's stored row read back from its line: the id a UUID, the time a UTC datetime."""
    row = orjson.loads(_stored_line(rows, raw)[0])
    row[0] = uuid.UUID(hex=row[0])
    row[1] = dt.datetime.fromtimestamp(row[1], dt.UTC)
    return row


VISITOR_IP = "203.0.113.7"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.109 Safari/537.36"
)
CID = "cid-visitor-0123456789"
QUERY = "utm_source=news&utm_campaign=spring&gclid=G-CLICK-1&token=SECRET-TOKEN&email=kim%40example.com"
REFERRER = "https://www.google.com/search?q=private-words"
EVENT_BATCH = [
    {
        "name": "pageview",
        "url": f"/portfolio?{QUERY}",
        "referrer": REFERRER,
        "props": {"who": "kim@example.com", "n": 3},
    },
    {"name": "signup", "url": f"/?{QUERY}", "referrer": REFERRER},
]
RAW_VALUES = (VISITOR_IP, CHROME, "SECRET-TOKEN", "kim%40example.com", "private-words", "search?q")


def _stored(
    make_settings: Callable[..., Settings],
    store: Store,
    categories: list[str] | None,
    *,
    client: tuple[str, int] = (VISITOR_IP, 50000),
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> tuple[list[dict[str, Any]], ConsentGateway, dict[str, Any]]:
    """One page visit and one /collect batch by a visitor with ``categories``; the stored rows."""
    gateway = ConsentGateway(site_app(), make_settings(**overrides))
    with client_for(gateway, client=client) as http:
        http.headers.update({"User-Agent": CHROME, "Referer": REFERRER, **(headers or {})})
        if categories is not None:
            http.cookies.set("cg_consent", sign_cookie(SECRET, consent_id=CID, categories=categories))
        assert http.get(f"/students?{QUERY}").status_code == 200
        counts = http.post("/_consent/collect", json=EVENT_BATCH, headers={"Referer": "http://testserver/"}).json()
    # Leaving the client ran lifespan shutdown, which flushes the writer.
    rows = store.query_dicts(f"SELECT * FROM {store.table('events')} ORDER BY kind DESC, name")
    return rows, gateway, counts


def _assert_no_raw_values(row: dict[str, Any]) -> None:
    text = repr(row)
    for raw in RAW_VALUES:
        assert raw not in text, f"{raw!r} stored in {row}"


def _assert_pseudonymised(row: dict[str, Any], gateway: ConsentGateway) -> None:
    assert row["identified"] == 0
    assert CID not in repr(row)
    assert row["visitor"] != gateway.runtime.rows.visitor_of(CID)
    assert row["granted"] == []
    assert row["click_id"] == ""
    assert row["ip_prefix"] == "203.0.113.0/24"
    assert row["utm_source"] == "news" and row["utm_campaign"] == "spring"
    assert row["referrer_host"] == "www.google.com"
    assert (row["browser"], row["browser_version"], row["os"], row["device"]) == ("Chrome", "120", "Windows", "desktop")
    _assert_no_raw_values(row)


def test_analytics_granted_keeps_visits_and_events_under_the_consent_visitor_key(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    rows, gateway, counts = _stored(make_settings, store, ["necessary", "analytics"])
    assert counts == {"accepted": 2, "kept": 1, "pseudonymised": 0, "dropped": 1}
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert set(by_name) == {("visit", "pageview"), ("event", "pageview")}  # the marketing event is gone
    visitor = gateway.runtime.rows.visitor_of(CID)
    for row in by_name.values():
        assert row["identified"] == 1
        assert row["visitor"] == visitor
        assert row["granted"] == ["analytics", "necessary"]
        assert row["ip_prefix"] == "203.0.113.0/24"  # kept rows are truncated too
        assert row["click_id"] == ""  # click ids need marketing consent
        assert row["utm_source"] == "news"
        assert CID not in repr(row)  # only the keyed hash of the consent id
        _assert_no_raw_values(row)
    visit = by_name[("visit", "pageview")]
    assert (visit["path"], visit["status"], visit["category"]) == ("/students", 200, "analytics")
    assert visit["site"] == "test-site"
    event = by_name[("event", "pageview")]
    assert event["path"] == "/portfolio"
    assert event["props"] == '{"who":"kim@example.com","n":3}'  # consented: props as sent


def test_no_analytics_consent_pseudonymises_visits_and_analytics_events(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    # The visitor has a consent id (marketing only): it must still appear nowhere in analytics rows.
    rows, gateway, counts = _stored(make_settings, store, ["necessary", "marketing"])
    assert counts == {"accepted": 2, "kept": 1, "pseudonymised": 1, "dropped": 0}
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert set(by_name) == {("visit", "pageview"), ("event", "pageview"), ("event", "signup")}
    _assert_pseudonymised(by_name[("visit", "pageview")], gateway)
    event = by_name[("event", "pageview")]
    _assert_pseudonymised(event, gateway)
    assert event["props"] == '{"who":"[redacted]","n":3}'
    # Same visitor, same day: one pseudonymous key for the visit and the event.
    assert by_name[("visit", "pageview")]["visitor"] == event["visitor"]


def test_no_consent_at_all_pseudonymises_and_drops_marketing(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    rows, gateway, counts = _stored(make_settings, store, None)
    assert counts == {"accepted": 2, "kept": 0, "pseudonymised": 1, "dropped": 1}
    assert {(r["kind"], r["name"]) for r in rows} == {("visit", "pageview"), ("event", "pageview")}
    for row in rows:
        _assert_pseudonymised(row, gateway)


def test_marketing_granted_keeps_campaign_and_click_ids(make_settings: Callable[..., Settings], store: Store) -> None:
    rows, gateway, _ = _stored(make_settings, store, ["necessary", "analytics", "marketing"])
    signup = next(r for r in rows if r["name"] == "signup")
    assert signup["identified"] == 1 and signup["category"] == "marketing"
    assert signup["visitor"] == gateway.runtime.rows.visitor_of(CID)
    assert signup["click_id"] == "gclid:G-CLICK-1"
    assert (signup["utm_source"], signup["utm_campaign"]) == ("news", "spring")
    visit = next(r for r in rows if r["kind"] == "visit")
    assert visit["click_id"] == "gclid:G-CLICK-1"  # the landing visit carries it too
    for row in rows:
        _assert_no_raw_values(row)


def test_marketing_refused_by_gpc_is_not_stored(make_settings: Callable[..., Settings], store: Store) -> None:
    rows, _, counts = _stored(make_settings, store, ["necessary", "analytics", "marketing"], headers={"Sec-GPC": "1"})
    assert counts["dropped"] == 1
    assert [r for r in rows if r["name"] == "signup"] == []
    assert all(r["click_id"] == "" for r in rows)


def test_custom_matrix_can_drop_unconsented_visits(make_settings: Callable[..., Settings], store: Store) -> None:
    matrix = (("visit", "keep", "drop"), ("analytics", "keep", "pseudonymise"), ("marketing", "keep", "drop"))
    rows, _, _ = _stored(make_settings, store, None, policy_matrix=matrix)
    assert [(r["kind"], r["name"]) for r in rows] == [("event", "pageview")]


def test_email_and_phone_path_segments_are_redacted(make_settings: Callable[..., Settings], store: Store) -> None:
    gateway = ConsentGateway(site_app(), make_settings())
    with client_for(gateway, client=(VISITOR_IP, 1)) as http:
        http.get("/students/kim@example.com/notes")
        http.get("/call/010-1234-5678")
    paths = sorted(p for (p,) in store.query_rows(f"SELECT path FROM {store.table('events')}"))
    assert paths == ["/call/[redacted]", "/students/[redacted]/notes"]


def test_static_assets_are_not_logged_as_visits(make_settings: Callable[..., Settings], store: Store) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as http:
        http.get("/app.js")
        http.get("/style.css")
        http.get("/")
    assert store.query_rows(f"SELECT path FROM {store.table('events')}") == [("/",)]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "prefix"),
    [
        ("127.0.0.1", "198.51.100.23", ("127.0.0.1",), "198.51.100.0/24"),
        ("127.0.0.1", "198.51.100.23, 10.1.2.3", ("127.0.0.1", "10.0.0.0/8"), "198.51.100.0/24"),
        (VISITOR_IP, "198.51.100.23", ("127.0.0.1",), "203.0.113.0/24"),  # untrusted peer: header ignored
        ("127.0.0.1", "198.51.100.23", (), "127.0.0.0/24"),  # no trusted proxies configured
        ("2001:db8:1234:5678::1", "", (), "2001:db8:1234::/48"),
        ("::ffff:203.0.113.7", "", (), "203.0.113.0/24"),
    ],
    ids=["proxy", "proxy-chain", "spoofed", "no-trust", "ipv6", "v4-mapped"],
)
def test_client_ip_from_connection_or_trusted_proxy_is_truncated(
    make_settings: Callable[..., Settings],
    store: Store,
    peer: str,
    forwarded: str,
    trusted: tuple[str, ...],
    prefix: str,
) -> None:
    gateway = ConsentGateway(site_app(), make_settings(trusted_proxies=trusted))
    with client_for(gateway, client=(peer, 1)) as http:
        http.get("/", headers={"X-Forwarded-For": forwarded} if forwarded else {})
    [(stored,)] = store.query_rows(f"SELECT ip_prefix FROM {store.table('events')}")
    assert stored == prefix
    rows = store.query_rows(f"SELECT * FROM {store.table('events')}")
    assert "198.51.100.23" not in repr(rows) and peer not in repr(rows).replace(prefix, "")


def test_receipts_hold_no_raw_ip_or_user_agent(make_settings: Callable[..., Settings], store: Store) -> None:
    with client_for(ConsentGateway(site_app(), make_settings()), client=(VISITOR_IP, 1)) as http:
        http.post("/_consent/", json={"action": "accept_all"}, headers={"User-Agent": CHROME})
    [row] = store.query_dicts(f"SELECT * FROM {store.table('consent_receipts')}")
    assert row["ip_prefix"] == "203.0.113.0/24"
    assert (row["browser"], row["os"], row["device"]) == ("Chrome", "Windows", "desktop")
    assert row["method"] == "accept_all" and row["version"] == "1.0"
    assert VISITOR_IP not in repr(row) and CHROME not in repr(row)


# -- retention ---------------------------------------------------------------------------------------

_DEFAULTS = {"UUID": None, "UInt8": 0, "UInt16": 0, "UInt32": 0, "UInt64": 0}


def _event_row(ts: dt.datetime, name: str) -> list[Any]:
    row: list[Any] = []
    for column, kind in EVENT_COLUMNS:
        if column == "event_id":
            row.append(uuid.uuid4())
        elif column == "ts":
            row.append(ts)
        elif column == "name":
            row.append(name)
        elif column == "granted":
            row.append([])
        else:
            row.append(_DEFAULTS.get(kind, ""))
    return row


def _receipt_row(ts: dt.datetime, consent_id: str) -> list[Any]:
    values = {
        "receipt_id": uuid.uuid4(),
        "ts": ts,
        "consent_id": consent_id,
        "categories": ["necessary"],
        "child": 0,
        "guardian_categories": [],
    }
    return [values.get(column, "") for column, _ in RECEIPT_COLUMNS]


def test_events_older_than_three_months_are_gone_after_optimize(store: Store) -> None:
    migrate(store)
    now = dt.datetime.now(dt.UTC)
    rows = [
        _event_row(now - dt.timedelta(days=130), "four_months_old"),
        _event_row(now - dt.timedelta(days=95), "just_over_three_months"),
        _event_row(now - dt.timedelta(days=60), "two_months_old"),
        _event_row(now - dt.timedelta(days=1), "yesterday"),
    ]
    store.insert("events", rows, [c for c, _ in EVENT_COLUMNS], [t for _, t in EVENT_COLUMNS])
    table = store.table("events")
    # Parts that are wholly expired may already be dropped on insert; OPTIMIZE settles the rest.
    store.command(f"OPTIMIZE TABLE {table} FINAL")
    names = sorted(n for (n,) in store.query_rows(f"SELECT name FROM {table}"))
    assert names == ["two_months_old", "yesterday"]


def test_receipts_outlive_events_for_five_years(store: Store) -> None:
    migrate(store)
    now = dt.datetime.now(dt.UTC)
    rows = [
        _receipt_row(now - dt.timedelta(days=365 * 6), "six-years"),
        _receipt_row(now - dt.timedelta(days=365 * 4), "four-years"),
        _receipt_row(now - dt.timedelta(days=200), "six-months"),
    ]
    store.insert("consent_receipts", rows, [c for c, _ in RECEIPT_COLUMNS], [t for _, t in RECEIPT_COLUMNS])
    table = store.table("consent_receipts")
    store.command(f"OPTIMIZE TABLE {table} FINAL")
    assert sorted(c for (c,) in store.query_rows(f"SELECT consent_id FROM {table}")) == ["four-years", "six-months"]


def test_schema_follows_the_design(store: Store) -> None:
    assert migrate(store) == [version for version, _, _ in MIGRATIONS]
    assert migrate(store) == []  # idempotent
    [(ddl,)] = store.query_rows(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": store.database},
    )
    assert "PARTITION BY toDate(ts)" in ddl
    assert "ORDER BY (site, kind, toDate(ts), name, visitor, ts)" in ddl
    assert "TTL toDateTime(ts) + toIntervalMonth(3)" in ddl  # DELETE is the default action, not echoed
    assert "ttl_only_drop_parts = 1" in ddl
    assert "`site` LowCardinality(String)" in ddl
    assert "ZSTD" in ddl


def test_retention_setting_changes_the_ttl(store: Store) -> None:
    migrate(store)
    migrate(store, events_months=6)
    [(ddl,)] = store.query_rows(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'events'",
        {"db": store.database},
    )
    assert "toIntervalMonth(6)" in ddl


# -- pseudonymous visitor keys and their salts --------------------------------------------------------


def _raw(ts: float, *, consent_id: str | None = None, action: str = "pseudonymise", **changes: Any) -> Any:
    from consent_gateway.records import RawRecord

    values: dict[str, Any] = dict(
        kind="visit", name="pageview", category="analytics", action=action, ts=ts, site="test-site",
        host="testserver", path="/", query="", referrer="", user_agent=CHROME, ip=VISITOR_IP,
        consent_id=consent_id, granted=frozenset({"necessary", "analytics"}) if consent_id else frozenset(),
    )  # fmt: skip
    return RawRecord.of(**{**values, **changes})


def test_pseudonymous_visitor_key_is_stable_within_a_day_only(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.rows import RowBuilder

    rows = RowBuilder(make_settings(), SaltStore(tmp_path / "salts"))
    visitor = [c for c, _ in EVENT_COLUMNS].index("visitor")
    now = dt.datetime.now(dt.UTC).replace(hour=12).timestamp()
    same_day = {_stored_row(rows, _raw(now + i))[visitor] for i in range(3)}
    yesterday = _stored_row(rows, _raw(now - 86400))[visitor]
    assert len(same_day) == 1  # unique visitors per day ...
    assert yesterday not in same_day  # ... but no linking across days
    kept = _stored_row(rows, _raw(now, consent_id=CID, action="keep"))
    assert (
        kept[visitor]
        == rows.visitor_of(CID)
        == _stored_row(rows, _raw(now - 86400, consent_id=CID, action="keep"))[visitor]
    )
    assert "<keys hidden>" in repr(rows) and PSEUDONYM_KEY not in repr(rows)


def test_pseudonymous_keys_hash_the_full_address_and_nothing_raw_is_kept(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    from consent_gateway import rows as row_module
    from consent_gateway.pseudonymize import SaltStore, pseudonymous_visitor

    salts = SaltStore(tmp_path / "salts")
    rows = row_module.RowBuilder(make_settings(), salts)
    visitor = [c for c, _ in EVENT_COLUMNS].index("visitor")
    now = dt.datetime.now(dt.UTC).replace(hour=12)
    for ts in (now.timestamp(), now.timestamp() + 1, now.timestamp() - 86400):
        expected = pseudonymous_visitor(
            salts.salt_for(dt.datetime.fromtimestamp(ts, dt.UTC).date()), "test-site", VISITOR_IP, CHROME
        )
        assert _stored_row(rows, _raw(ts))[visitor] == expected
    # A neighbour on the same /24 with the same browser is another visitor.
    neighbour = _raw(now.timestamp(), ip=VISITOR_IP.rsplit(".", 1)[0] + ".254")
    assert neighbour.visitor.ip != VISITOR_IP
    assert _stored_row(rows, neighbour)[visitor] != _stored_row(rows, _raw(now.timestamp()))[visitor]
    # No address outlives the batch it came in: the builder holds no per-visitor state.
    assert VISITOR_IP not in repr(vars(rows) if hasattr(rows, "__dict__") else rows)


def test_row_ids_are_distinct_version_4_uuids(make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.rows import RowBuilder

    rows = RowBuilder(make_settings(), SaltStore(tmp_path / "salts"))
    ids = [_stored_row(rows, _raw(1_795_000_000.0))[0] for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(isinstance(i, uuid.UUID) and i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    line, _ = _stored_line(rows, _raw(1_795_000_000.0))
    assert uuid.UUID(hex=json.loads(line)[0]).version == 4


def test_daily_salts_are_destroyed_after_48_hours(tmp_path: Any) -> None:
    from consent_gateway.pseudonymize import SaltStore

    salts = SaltStore(tmp_path / "keys")
    day = dt.date(2026, 11, 20)
    noon = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    first = salts.salt_for(day, now=noon)
    assert salts.salt_for(day, now=noon) == first and len(first) == 32
    assert salts.salt_for(day + dt.timedelta(days=1), now=noon + dt.timedelta(days=1)) != first
    assert salts.destroy_expired(now=dt.datetime(2026, 11, 21, 23, 59, tzinfo=dt.UTC)) == []
    assert salts.destroy_expired(now=dt.datetime(2026, 11, 22, 0, 1, tzinfo=dt.UTC)) == ["2026-11-20"]
    assert salts.days() == ["2026-11-21"]
    assert first.hex() not in salts.path.read_text()
    assert salts.path.stat().st_mode & 0o077 == 0  # readable by the gateway's user only


def test_rows_of_a_batch_equal_the_rows_built_one_by_one(make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    """event_lines works shared values out once per batch; each row must still be its own."""
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.rows import RowBuilder

    rows = RowBuilder(make_settings(), SaltStore(tmp_path / "salts"))
    now = dt.datetime.now(dt.UTC).replace(hour=12).timestamp()
    batch = []
    for i in range(12):
        raw = _raw(
            now,
            consent_id=CID if i % 3 == 0 else None,
            action="keep" if i % 3 == 0 else "pseudonymise",
            ip=("203.0.113.9", "198.51.100.7", "2001:db8::1")[i % 3],
            path=("/", "/students/kim@example.com", "/a", "/")[i % 4],
            query=("", "utm_source=news&gclid=abc", "utm_source=mail")[i % 3],
            referrer=("", "https://search.example/?q=1", "http://testserver/back")[i % 3],
            host=("testserver", "other.example")[i % 2],
            event_id=uuid.uuid4(),
        )
        batch.append(raw)
    lines, keys = rows.event_lines(batch)
    singles = [_stored_line(rows, raw) for raw in batch]
    assert lines == [line for line, _ in singles]
    assert keys == [key for _, key in singles]
    assert len(set(lines)) == len(lines)


def _collected(now: float) -> Any:
    from consent_gateway.records import CollectedEvents, EventFields, Location, Visitor, props_text

    props = '{"plan":"pro","contact":"kim@example.com","n":3}'
    join = Location("testserver", "/join", "utm_source=news&gclid=abc", "https://search.example/")
    events = [
        EventFields("signup", "marketing", "keep", CID, join, props),
        EventFields("signup", "marketing", "keep", CID, Location("testserver", "/join", "", ""), None),
        EventFields(
            "scroll", "analytics", "pseudonymise", None, Location("testserver", "/students/kim@example.com", "", ""),
            props,
        ),
        EventFields(
            "scroll", "analytics", "keep", "withdrawn-id",
            Location("testserver", "/a", "utm_source=mail", "http://testserver/back"), props,
        ),
        # The same shape as the first (one template, a location of its own) with props that JSON must escape.
        EventFields(
            "signup",
            "marketing",
            "keep",
            CID,
            Location("testserver", "/join", "utm_source=news&gclid=abc", "https://search.example/"),
            props_text({"q": 'say "hi" \\ 한국어 \u2028 \x01', "n": 1.5}),
        ),
    ]  # fmt: skip
    granted = frozenset({"necessary", "analytics", "marketing"})
    return CollectedEvents(now, "test-site", Visitor(CHROME, VISITOR_IP, granted), events)


def test_rows_of_collected_events_equal_the_rows_of_their_records(
    make_settings: Callable[..., Settings], tmp_path: Any
) -> None:
    """The writer encodes a /collect request's events straight from their structs; the rows must be
    those of the same events as RawRecords, with erased consent ids stored pseudonymised."""
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.rows import RowBuilder

    rows = RowBuilder(make_settings(), SaltStore(tmp_path / "salts"))
    batch = _collected(dt.datetime.now(dt.UTC).replace(hour=12).timestamp())
    records = batch.records()
    assert [r.name for r in records] == ["signup", "signup", "scroll", "scroll", "signup"]
    assert all(r.kind == "event" and r.site == "test-site" and r.visitor.ip == VISITOR_IP for r in records)
    # What the writer does for an erased id: a copy without the identity.
    records[3] = structs.replace(records[3], consent_id=None, action="pseudonymise")
    lines, keys = rows.collected_lines([batch, batch], {"withdrawn-id"})
    expected, expected_keys = rows.event_lines(records + records)
    assert [json.loads(line)[1:] for line in lines] == [json.loads(line)[1:] for line in expected]  # ids are random
    assert keys == expected_keys
    stored = [dict(zip([c for c, _ in EVENT_COLUMNS], json.loads(line), strict=True)) for line in lines]
    assert [r["identified"] for r in stored] == [1, 1, 0, 0, 1] * 2
    assert json.loads(stored[4]["props"]) == {"q": 'say "hi" \\ 한국어 \u2028 \x01', "n": 1.5}
    assert json.loads(stored[0]["props"])["contact"] == "kim@example.com"  # identified: props as sent
    assert json.loads(stored[2]["props"]) == {"plan": "pro", "contact": "[redacted]", "n": 3}
    assert json.loads(stored[3]["props"])["contact"] == "[redacted]"
    assert stored[1]["props"] == ""
    assert stored[0]["click_id"] == "gclid:abc" and stored[3]["click_id"] == ""


def test_the_embedded_engines_converting_insert_stores_what_a_plain_insert_stores(
    make_settings: Callable[..., Settings], store: Store, tmp_path: Any
) -> None:
    """The writer's inserts read LowCardinality columns as strings and convert whole columns; the rows
    must be exactly those of a plain insert of the same lines, and the temporary file must go."""
    import glob
    import tempfile

    from consent_gateway.pipeline.writer import INSERT_DEDUP_SETTINGS
    from consent_gateway.pseudonymize import SaltStore
    from consent_gateway.rows import RowBuilder

    migrate(store)
    rows = RowBuilder(make_settings(), SaltStore(tmp_path / "salts"))
    now = dt.datetime.now(dt.UTC).replace(hour=12).timestamp()
    batch = _collected(now)
    lines, _ = rows.collected_lines([batch] * 3)
    names = [n for n, _ in EVENT_COLUMNS]
    types = [t for _, t in EVENT_COLUMNS]
    assert store.embedded

    def token(name: str) -> dict[str, Any]:  # as the writer inserts
        return {**INSERT_DEDUP_SETTINGS, "insert_deduplication_token": name}

    before = set(glob.glob(f"{tempfile.gettempdir()}/cg-insert-*"))
    store.insert_lines("events", lines, names, settings=token("converted"), column_types=types)
    store.insert_lines("events", lines, names, settings=token("plain"))
    assert set(glob.glob(f"{tempfile.gettempdir()}/cg-insert-*")) == before
    table = store.table("events")
    assert store.query_rows(f"SELECT count(), uniqExact(event_id) FROM {table}")[0] == (30, 15)
    every_column = ", ".join(f"`{n}`" for n in names)
    unpaired = f"SELECT count() FROM (SELECT {every_column} FROM {table} GROUP BY {every_column} HAVING count() != 2)"
    assert store.query_rows(unpaired)[0][0] == 0, "each row of one insert has its identical twin in the other"
    assert store.query_rows(f"SELECT sum(hits) FROM {store.table('events_daily')}")[0][0] == 30
    # The same token again is a repeat, whichever way it comes.
    store.insert_lines("events", lines, names, settings=token("plain"), column_types=types)
    assert store.query_rows(f"SELECT count() FROM {table}")[0][0] == 30
    assert store.query_rows(f"SELECT sum(hits) FROM {store.table('events_daily')}")[0][0] == 30
