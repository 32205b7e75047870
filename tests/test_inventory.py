"""The cookie inventory: counting names (never values), its bounds, and the round trip through ClickHouse."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import tracemalloc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consent_gateway.inventory import (
    PENDING_REQUESTS,
    SESSION,
    SOURCE_CATALOGUE,
    SOURCE_GATEWAY,
    SOURCE_REGISTRY,
    SOURCE_UNCLASSIFIED,
    Classifier,
    CookieAttributes,
    CookieInventory,
    create_inventory_table,
    flush_inventory,
    read_inventory,
    watch_unclassified,
)
from consent_gateway.registry import Classification, Source
from consent_gateway.store import Store
from consent_gateway.store.schema import migrate

from .conftest import REGISTRY

CATALOGUE = {
    "_ga": ("Google Analytics", "analytics", "방문자 구분", "Distinguishes visitors", 63_072_000),
    "csrftoken": ("Django", "necessary", "요청 위조 방지", "Cross-site request forgery protection", "1 year"),
}


@pytest.fixture
def store(store: Store) -> Store:
    """The test's database with the gateway's migrations applied, as a started gateway has it."""
    migrate(store)
    return store


def catalogue(name: str) -> tuple[Any, ...] | None:
    return CATALOGUE.get(name)


def classifier() -> Classifier:
    return Classifier(REGISTRY, unknown_category="preferences", catalogue=catalogue, fixed={"cg_consent": "necessary"})


def test_classifier_prefers_registry_then_catalogue() -> None:
    c = classifier()
    assert c.classify("palette_session") == ("necessary", SOURCE_REGISTRY)
    assert c.classify("_mk_pixel") == ("marketing", SOURCE_REGISTRY)
    assert c.classify("_ga") == ("analytics", SOURCE_CATALOGUE)
    assert c.classify("mystery") == ("preferences", SOURCE_UNCLASSIFIED)
    assert c.classify("cg_consent") == ("necessary", SOURCE_GATEWAY)
    # The site's registry overrides the catalogue's category.
    over = Classifier((("_ga", "marketing"),), unknown_category="preferences", catalogue=catalogue)
    assert over.classify("_ga") == ("marketing", SOURCE_REGISTRY)


def test_classifier_answers_what_the_registry_answers(caplog: pytest.LogCaptureFixture) -> None:
    """One precedence: the inventory's answer is the cookie registry's, but for the gateway's own
    cookies; names nobody knows are counted by the inventory, not logged."""
    c = classifier()
    names = ["palette_session", "_mk_pixel", "_mk_", "_ga", "csrftoken", "mystery", "x" * 500, ""]
    with caplog.at_level(logging.WARNING):
        for name in names:
            found = c.registry.classify(name)
            assert c.classify(name) == (found.category, found.source.value)
    assert c.registry.classify("_ga") == Classification("analytics", Source.CATALOGUE, "Google Analytics")
    assert c.registry.classify("cg_consent").source is Source.UNCLASSIFIED  # the gateway's own: inventory only
    assert not caplog.records


def test_attributes_are_read_as_set() -> None:
    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC).timestamp()
    a = CookieAttributes.from_set_cookie(
        "_ga=GA1.2.secret; Domain=.Example.com; Path=/shop; Max-Age=63072000; Secure; HttpOnly; SameSite=lax", now
    )
    assert a == CookieAttributes("example.com", "/shop", 63072000, True, True, "Lax")
    b = CookieAttributes.from_set_cookie("x=1; Expires=Sat, 05 Dec 2026 00:00:00 GMT", now)
    assert b.lifetime_seconds == 86400
    assert CookieAttributes.from_set_cookie("x=1; Path=/").lifetime_seconds == SESSION
    # Max-Age wins over Expires, and garbage is ignored.
    c = CookieAttributes.from_set_cookie("x=1; Expires=never; Max-Age=60; Max-Age=zz", now)
    assert c.lifetime_seconds == 60


def _fill(inventory: CookieInventory) -> None:
    inventory.observe_set_cookie("palette_session=s3cr3t; Path=/; HttpOnly", path="/login", granted=True, blocked=False)
    inventory.observe_set_cookie("_ga=GA1.1.99; Max-Age=63072000", path="/", granted=False, blocked=True)
    inventory.observe_set_cookie("_ga=GA1.1.98; Max-Age=63072000", path="/news", granted=True, blocked=False)
    inventory.observe_set_cookie("_ga=GA1.1.97; Max-Age=63072000", path="/news", granted=True, blocked=False)
    inventory.observe_set_cookie("mystery=v; SameSite=None; Secure", path="/", granted=True, blocked=False)
    # Set by a script on the page: only ever seen coming back.
    inventory.observe_request_cookies(["_hjid", "palette_session", "_ga"], path="/", granted=["necessary"])
    inventory.observe_request_cookies(["_hjid"], path="/", granted=["necessary", "preferences"])


def test_inventory_round_trip_through_clickhouse(store: Store) -> None:
    inventory = CookieInventory(classifier())
    create_inventory_table(store)
    create_inventory_table(store)  # idempotent
    _fill(inventory)
    assert flush_inventory(store, inventory, "site-a") == 4
    # A second flush later the same day adds to the same names.
    inventory.observe_set_cookie("_ga=x; Max-Age=100", path="/other", granted=True, blocked=False)
    flush_inventory(store, inventory, "site-a")
    flush_inventory(store, CookieInventory(classifier()), "site-a")  # nothing to write
    report = read_inventory(store, "site-a")
    by = {c.name: c for c in report.cookies}
    assert set(by) == {"palette_session", "_ga", "mystery", "_hjid"}
    ga = by["_ga"]
    assert (ga.category, ga.source, ga.set_by) == ("analytics", SOURCE_CATALOGUE, "server")
    assert (ga.set_count, ga.request_count, ga.blocked, ga.before_consent) == (4, 1, 1, 2)
    assert ga.top_paths[0] == ("/news", 2)
    assert {p for p, _ in ga.top_paths} == {"/", "/news", "/other"}
    hj = by["_hjid"]
    assert (hj.set_by, hj.source, hj.request_count, hj.before_consent) == ("script", SOURCE_UNCLASSIFIED, 2, 1)
    session = by["palette_session"]
    assert (session.http_only, session.cookie_path, session.lifetime_seconds) == (True, "/", SESSION)
    assert session.before_consent == 0
    assert by["mystery"].same_site == "None" and by["mystery"].secure
    assert [c.name for c in report.unclassified()] == ["_hjid", "mystery"]
    # Never a value, and nothing of another site.
    dump = repr(store.query_rows(f"SELECT * FROM {store.table('cookie_inventory')}"))
    assert "s3cr3t" not in dump and "GA1.1" not in dump
    assert read_inventory(store, "site-b").cookies == ()


def test_the_table_has_a_ttl_and_no_visitor_keys(store: Store) -> None:
    # The migrations made it with the default retention; a changed setting moves its TTL.
    create_inventory_table(store, events_months=7)
    migrate(store, events_months=7)
    ddl = store.query_rows(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'cookie_inventory'",
        {"db": store.database},
    )[0][0]
    assert "toIntervalMonth(7)" in ddl
    assert "visitor" not in ddl and "consent_id" not in ddl and "ip" not in ddl.replace("Tuple", "")


def test_bounds_count_overflow_and_are_read_back(store: Store) -> None:
    inventory = CookieInventory(classifier(), max_names=3)
    for i in range(10):
        inventory.observe_request_cookies([f"n{i}"], path="/", granted=[])
    assert inventory.overflow == 7
    create_inventory_table(store)
    flush_inventory(store, inventory, "s")
    report = read_inventory(store, "s")
    assert len(report.cookies) == 3 and report.overflow == 7
    assert inventory.overflow == 0  # a flush starts counting afresh


def test_unclassified_gauge() -> None:
    inventory = CookieInventory(classifier())
    registry = CollectorRegistry()
    watch_unclassified(inventory, registry)
    _fill(inventory)
    assert b"cg_cookie_unclassified_names 2.0" in generate_latest(registry)


def _flood(inventory: CookieInventory, start: int, count: int) -> None:
    long = "x" * 5000
    for i in range(start, start + count):
        inventory.observe_set_cookie(f"{long}{i}=v", path=f"/p/{i}/{long}", granted=False, blocked=True)
        inventory.observe_request_cookies([f"req{i}{long}"], path="/", granted=[])


def test_a_flood_of_distinct_names_stays_bounded() -> None:
    inventory = CookieInventory(Classifier((), unknown_category="preferences", cache_size=256), max_names=500)
    _fill(inventory)
    _flood(inventory, 0, 2_000)  # warm up: the caps are reached
    # tracemalloc counts every thread's allocations, and threads left by earlier tests in this
    # process allocate too: only what is still held of the allocations made under this flood's own
    # frames (this file in their stack) is the inventory's.
    gc.collect()
    tracemalloc.start(32)
    try:
        _flood(inventory, 2_000, 20_000)
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = snapshot.filter_traces([tracemalloc.Filter(True, __file__, all_frames=True)])
    grown = sum(stat.size for stat in held.statistics("filename"))
    # 20,000 more names of 5 kB each (200 MB if kept) leave memory where the caps put it.
    assert grown < 512 * 1024, grown
    assert len(inventory.drain()) == 501  # 500 names and the overflow row
    assert inventory.unclassified_count() <= 500


def test_cookie_headers_are_tallied_by_shape_and_counted_exactly() -> None:
    now = [1_000]
    inventory = CookieInventory(classifier(), clock=lambda: now[0])
    necessary, everything = frozenset({"necessary"}), frozenset({"necessary", "analytics", "preferences"})
    for visitor in range(300):  # the same names with other values: one shape
        inventory.observe_cookie_header(f"_ga=GA1.{visitor}; palette_session=s{visitor}; _ga=again".encode(), necessary)
        now[0] += 1
    inventory.observe_cookie_header(b"_ga=1; _hjid=2", everything)
    # A shape waits as one tally, its names' counts as one entry each when read.
    assert len(inventory._requests) == 2 and not inventory._entries
    rows = {row.name: row for row in inventory.drain()}
    ga, session, hj = rows["_ga"], rows["palette_session"], rows["_hjid"]
    # A name sent twice in one header counts once; before consent only where its category was not granted.
    assert (ga.request_count, ga.before_consent, ga.first_seen, ga.last_seen) == (301, 300, 1_000, 1_300)
    assert (session.request_count, session.before_consent) == (300, 0)
    assert (hj.request_count, hj.before_consent, hj.first_seen) == (1, 0, 1_300)
    assert inventory.drain() == []


def test_a_flood_of_header_shapes_waits_within_its_bound() -> None:
    inventory = CookieInventory(classifier(), max_names=100)
    for i in range(5 * PENDING_REQUESTS):
        inventory.observe_cookie_header(f"a{i}=1; b{i % 7}=2".encode(), frozenset())
        assert len(inventory._requests) <= PENDING_REQUESTS
    long = b"; ".join(b"z%d=%s" % (n, b"v" * 100) for n in range(60))  # past the cached size: counted at once
    inventory.observe_cookie_header(long, frozenset())
    assert inventory.unclassified_count() == 100
    # 1,280 names a*, 7 names b*, 60 names z*: 100 held, every sighting of another counted as overflow.
    assert inventory.overflow > 0
    rows = inventory.drain()
    assert len(rows) == 101 and rows[-1].source == "overflow"
    assert sum(r.request_count for r in rows) + rows[-1].overflow == 5 * PENDING_REQUESTS * 2 + 60


def _names(rows: list[Any]) -> set[str]:
    return {r.name for r in rows}


def test_names_and_paths_are_cut() -> None:
    inventory = CookieInventory(classifier())
    inventory.observe_set_cookie("a" * 1000 + "=v", path="/" + "p" * 1000, granted=True, blocked=False)
    (row,) = inventory.drain()
    assert len(row.name) == 128 and len(row.paths[0][0]) == 200


def test_a_running_gateway_inventories_with_the_registry_it_enforces_with(tmp_path: Any) -> None:
    """One classifier: the inventory of a gateway asks the very registry that filters Set-Cookie,
    so the two never disagree, not even for a catalogue cookie whose category the site does not offer."""
    from consent_gateway import Settings
    from consent_gateway.runtime import GatewayRuntime
    from consent_gateway.settings import Category

    from .conftest import PSEUDONYM_KEY, SECRET

    cats = (
        Category(key="essential", name_ko="필수", name_en="Essential", required=True),
        Category(key="stats", name_ko="통계", name_en="Statistics"),
    )
    settings = Settings(
        site_id="one-classifier",
        data_dir=tmp_path,
        secret_keys=(SECRET,),
        pseudonym_key=PSEUDONYM_KEY,
        categories=cats,
        visit_category="stats",
        marketing_category="stats",
        gpc_refuses=("stats",),
        behavioural_categories=("stats",),
        unknown_cookie_category="stats",
        unknown_event_category="stats",
        event_registry=(),
        cookie_registry=(("sid", "essential"),),
        policy_matrix=(("visit", "keep", "pseudonymise"),),
    )
    runtime = GatewayRuntime(settings)
    inventory = runtime.inventory.classifier
    assert inventory.registry is runtime.cookies
    # _fbp is catalogued as marketing, which this site lacks: both say the unknown category.
    for name in ("sid", "_fbp", "csrftoken", "never-seen-before"):
        assert inventory.classify(name)[0] == runtime.cookies.category_of(name), name
    assert runtime.cookies.category_of("_fbp") == "stats"
    # The gateway's own cookies are in the site's required category, said to be the gateway's.
    assert inventory.classify(settings.consent_cookie_name) == ("essential", SOURCE_GATEWAY)
    assert runtime.cookies.category_of(settings.consent_cookie_name) == "essential"
