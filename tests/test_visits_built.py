"""The stored visits of closed days, on the real embedded engine: every endpoint answers the same
with the days built as without, a day whose events changed is answered live, erasure reaches the
stored visits, and the table keeps visitor keys no longer than the events."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest

from consent_gateway import Settings
from consent_gateway.analytics import run_query
from consent_gateway.store import Store, migrate, ranges, visits
from consent_gateway.store.schema import VISITOR_SET
from consent_gateway.store.statements import erase_visitor
from consent_gateway.store.visits import (
    OPEN_MARK,
    build_closed_days,
    build_day,
    build_open_day,
    closed_day,
    days_to_build,
    fresh_builds,
    partial_builds,
)

from . import analytics_data as data

CAMPAIGN = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "autumn"}


def _landing_choices(day: dt.datetime, n: int) -> list[dict[str, Any]]:
    """``n`` visitors landing on a campaign link and choosing on the first page; the first two keep
    to analytics (no marketing), the others accept all (with a click id on the link)."""
    rows = []
    for i in range(n):
        at = day + dt.timedelta(minutes=7 * i)
        pseudonym, consented = 500_000 + i * 7 + day.day, 600_000 + i
        granted = data.NO_MARKETING if i < 2 else data.ALL
        click = "" if i < 2 else f"gclid:{i}"
        rows += [
            data._row(ts=at, identified=0, visitor=pseudonym, device="desktop", os="Linux", **CAMPAIGN),
            data._row(
                ts=at + dt.timedelta(seconds=5), kind="link", name="consent", identified=1, visitor=consented,
                granted=granted, click_id=click, props=f'{{"pseudonym":{pseudonym}}}', **CAMPAIGN,
            ),
            data._row(ts=at + dt.timedelta(seconds=30), visitor=consented, granted=granted, path="/courses",
                      device="desktop", os="Linux"),
            data._row(ts=at + dt.timedelta(seconds=50), kind="event", name="enrol", visitor=consented,
                      granted=granted, path="/courses", device="desktop", os="Linux"),
        ]  # fmt: skip
    return rows


@pytest.fixture
def traffic(make_settings: Callable[..., Settings], store: Store) -> tuple[Settings, dt.date]:
    """Three past days of the analytics data set, landing-page choices on two of them, a little today."""
    settings = make_settings(k_anonymity=2)
    migrate(store)
    today = dt.datetime.now(dt.UTC).date()
    base = today - dt.timedelta(days=6)
    rows = data.build_rows(base)
    for offset in (0, 1):
        morning = dt.datetime.combine(base + dt.timedelta(days=offset), dt.time(7, 0), dt.UTC)
        rows += _landing_choices(morning, 5)
    midnight = dt.datetime.combine(today, dt.time(0, 0), dt.UTC)
    rows += _landing_choices(midnight, 3)
    data.insert(store, "events", rows)
    data.insert(store, "consent_receipts", data.build_receipts(base))
    return settings, base


def _queries(base: dt.date) -> list[tuple[str, dict[str, str]]]:
    today = dt.datetime.now(dt.UTC).date()
    span = {"from": base.isoformat(), "to": today.isoformat()}
    one = {"from": base.isoformat(), "to": base.isoformat()}
    dims = ["page", "entry_page", "exit_page", "referrer_host", "utm_source", "utm_medium", "utm_campaign"]
    dims += ["utm_term", "utm_content", "click_attribution", "browser", "os", "device", "event_name"]
    queries: list[tuple[str, dict[str, str]]] = [("breakdown", {**span, "dimension": d}) for d in dims]
    queries += [
        ("aggregate", span),
        ("aggregate", one),
        ("aggregate", {**span, "compare": "previous"}),
        ("aggregate", {**span, "utm_source": "google"}),
        ("aggregate", {**span, "device": "desktop", "os": "Windows"}),
        ("aggregate", {**span, "utm_campaign": "autumn"}),
        ("aggregate", {**span, "click_attribution": "ad click"}),
        ("aggregate", {**span, "page": "/pricing"}),
        ("aggregate", {**span, "goals": "event:enrol,page:/signup"}),
        ("timeseries", {**span, "interval": "day"}),
        ("timeseries", {**span, "interval": "week", "compare": "previous"}),
        ("timeseries", {**span, "interval": "month"}),
        ("timeseries", {**one, "interval": "hour"}),
        ("timeseries", {**span, "interval": "day", "utm_source": "newsletter"}),
        ("breakdown", {**span, "dimension": "entry_page", "utm_source": "google"}),
        ("breakdown", {**span, "dimension": "exit_page", "device": "desktop"}),
        ("breakdown", {**span, "dimension": "utm_source", "browser": "Firefox"}),
        ("breakdown", {**span, "dimension": "referrer_host", "limit": "1"}),
        ("breakdown", {**span, "dimension": "page", "utm_campaign": "autumn"}),
        ("goals", span),
        ("goals", {**span, "goals": "event:enrol,event:signup", "device": "mobile"}),
        ("funnel", {**span, "steps": "page:/,page:/courses,event:enrol"}),
        ("consent-rates", span),
    ]
    return queries


def _answers(settings: Settings, store: Store, base: dt.date) -> list[dict[str, Any]]:
    return [run_query(store, settings, endpoint, params).as_json() for endpoint, params in _queries(base)]


def test_every_endpoint_answers_the_same_with_the_visits_built(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    live = _answers(settings, store, base)
    built = build_closed_days(store, events_months=settings.events_retention_months)
    # The three past days with events are built (the newest first); today is not closed.
    assert [b.day for b in built] == [base + dt.timedelta(days=d) for d in (2, 1, 0)]
    assert all(b.visits > 0 for b in built)
    today = dt.datetime.now(dt.UTC).date()
    assert set(fresh_builds(store, base, today)[0]) == {b.day for b in built}
    assert _answers(settings, store, base) == live
    # Nothing left to build: a second run does nothing.
    assert build_closed_days(store, events_months=settings.events_retention_months) == []


def test_a_fresh_day_is_read_from_the_stored_visits(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    day = {"from": base.isoformat(), "to": base.isoformat()}
    desktop = {**day, "device": "desktop"}

    def pageviews(query: dict[str, str]) -> int:
        return int(run_query(store, settings, "aggregate", query).as_json()["results"][0]["pageviews"])

    before, before_desktop = pageviews(day), pageviews(desktop)
    build_day(store, base)
    # Changing the stored rows (never done outside this test) shows where each answer comes from:
    # a filtered one from the visits, an unfiltered one from the day's sums.
    visits, sums = store.table("visits"), store.table("visit_sums")
    rows = int(store.query_rows(f"SELECT count() FROM {visits} WHERE device = 'desktop'")[0][0])
    store.command(
        f"ALTER TABLE {visits} UPDATE pageviews = pageviews + 1 WHERE device = 'desktop' SETTINGS mutations_sync = 1"
    )
    store.command(f"ALTER TABLE {sums} UPDATE pageviews = pageviews + 1000 WHERE list = '' SETTINGS mutations_sync = 1")
    assert rows > 0 and pageviews(desktop) == before_desktop + rows
    assert pageviews(day) == before + 1000


def test_a_day_whose_events_changed_is_answered_live(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    late = data._row(
        ts=dt.datetime.combine(base, dt.time(18, 0), dt.UTC), visitor=10_001, granted=data.ALL, path="/late"
    )
    day = {"from": base.isoformat(), "to": base.isoformat()}
    before = run_query(store, settings, "aggregate", day).as_json()["results"][0]
    data.insert(store, "events", [late])
    today = dt.datetime.now(dt.UTC).date()
    assert base not in fresh_builds(store, base, today)[0]
    assert days_to_build(store, base, base + dt.timedelta(days=5)) == [base]
    after = run_query(store, settings, "aggregate", day).as_json()["results"][0]
    # One more page view, and one more visit (more than 30 minutes after C1's last hit of the day).
    assert (after["pageviews"], after["visits"]) == (before["pageviews"] + 1, before["visits"] + 1)
    answer = _answers(settings, store, base)
    # Built again, the day answers from the table and says the same as live.
    build_closed_days(store, events_months=settings.events_retention_months)
    assert base in fresh_builds(store, base, today)[0]
    assert _answers(settings, store, base) == answer


def test_a_rebuild_replaces_the_day_and_readers_take_the_newest(
    traffic: tuple[Settings, dt.date], store: Store
) -> None:
    settings, base = traffic
    live = _answers(settings, store, base)
    first = build_day(store, base)
    second = build_day(store, base)
    assert second.build > first.build and second.visits == first.visits
    _wait_for_mutations(store)
    stored = store.query_rows(
        f"SELECT build, count() FROM {store.table('visits')} WHERE day = {{d:Date}} GROUP BY build", {"d": base}
    )
    assert stored == [(second.build, second.visits)]
    assert fresh_builds(store, base, base)[0] == {base: second.build}
    assert _answers(settings, store, base) == live


def _wait_for_mutations(store: Store) -> None:
    """Older builds are deleted in the background: wait until the engine has done it."""
    for _ in range(300):
        pending = store.query_rows(
            "SELECT count() FROM system.mutations WHERE database = {db:String} AND is_done = 0", {"db": store.database}
        )
        if not int(pending[0][0]):
            return
        time.sleep(0.1)


def test_erasure_removes_the_stored_visits_of_the_consent_id(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    visits = store.table("visits")

    def held(visitor: int) -> int:
        return int(store.query_rows(f"SELECT count() FROM {visits} WHERE visitor = {{v:UInt64}}", {"v": visitor})[0][0])

    def summed_days() -> set[dt.date]:
        rows = store.query_rows(f"SELECT DISTINCT day FROM {store.table('visit_sums')}")
        return {day for (day,) in rows}

    # 600_002 accepted all on a landing page on two days: its landing hits were merged into its key.
    assert held(600_002) == 2
    landed = {base, base + dt.timedelta(days=1)}
    assert summed_days() == {base + dt.timedelta(days=d) for d in (0, 1, 2)}
    erase_visitor(store, 600_002)
    assert held(600_002) == 0
    assert held(600_003) == 2
    # The sums of its days held its key in a set: they are gone with it, the other day's stay.
    assert summed_days() == {base + dt.timedelta(days=2)}
    assert landed.isdisjoint(summed_days())
    # Its landing hits stay, pseudonymised: the days answer live until rebuilt, then the same.
    live = _answers(settings, store, base)
    assert build_closed_days(store, events_months=settings.events_retention_months) != []
    assert _answers(settings, store, base) == live


def test_the_visits_keep_keys_no_longer_than_the_events(store: Store) -> None:
    def ttl(table: str) -> str:
        rows = store.query_rows(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": store.database, "t": table},
        )
        return str(rows[0][0])

    migrate(store, events_months=3)
    assert "TTL day + toIntervalMonth(3)" in ttl("visits")
    assert "toIntervalMonth(3)" in ttl("visit_builds")
    migrate(store, events_months=2)
    assert "TTL day + toIntervalMonth(2)" in ttl("visits")
    assert "toDateTime(ts) + toIntervalMonth(2)" in ttl("events")


def test_a_day_is_closed_once_its_last_visit_has_settled() -> None:
    midnight = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert closed_day(midnight + dt.timedelta(minutes=59)) == dt.date(2026, 2, 28)
    assert closed_day(midnight + dt.timedelta(minutes=61)) == dt.date(2026, 3, 1)


def test_the_command_builds_each_closed_day_and_says_so(
    traffic: tuple[Settings, dt.date], store: Store, tmp_path: Any, database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from consent_gateway.cli import main

    from .test_cli import _config

    _, base = traffic
    assert main(["visits", "build", "--config", str(_config(tmp_path, database))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:3]] == [str(base + dt.timedelta(days=d)) for d in (2, 1, 0)]
    assert "visits from" in out[0] and out[-1].startswith("visits: 3 closed day(s) built")
    assert main(["visits", "build", "--config", str(_config(tmp_path, database))]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("visits: 0 closed day(s) built")


# -- the open day ----------------------------------------------------------------------------------


def _open_day_traffic(today: dt.date) -> list[dict[str, Any]]:
    """Hits of today around an open-day build at 00:40 (it reads hits to 00:39 and keeps the visits
    that ended before 00:09): a stored visit whose key comes back after it, a landing whose link is
    written after the build, a visit still open at the build."""
    at = dt.datetime.combine(today, dt.time(0, 0), dt.UTC)

    def m(minutes: float) -> dt.datetime:
        return at + dt.timedelta(minutes=minutes)

    pseudonym, chooser = 700_001, 800_001
    return [
        # 600_001 (a fixture landing at 00:07) is seen again at 00:45: a second visit of that key.
        data._row(ts=m(45), visitor=600_001, granted=data.NO_MARKETING, path="/again", device="desktop", os="Linux"),
        # A pseudonymised visit 00:02-00:31 (open at the build); a choice at 00:50 links the 00:31 hit.
        data._row(ts=m(2), identified=0, visitor=pseudonym, path="/a", **CAMPAIGN),
        data._row(ts=m(31), identified=0, visitor=pseudonym, path="/b"),
        data._row(
            ts=m(50), kind="link", name="consent", identified=1, visitor=chooser, granted=data.ALL,
            click_id="gclid:late", props=f'{{"pseudonym":{pseudonym}}}',
        ),
        data._row(ts=m(51), visitor=chooser, granted=data.ALL, path="/courses"),
        # A pseudonymised key stored at 00:01 that comes back at 00:40, after the build's hits.
        data._row(ts=m(1), identified=0, visitor=700_002, path="/c", device="tablet"),
        data._row(ts=m(40), identified=0, visitor=700_002, path="/d", device="tablet"),
    ]  # fmt: skip


def test_an_open_day_answers_the_same_from_its_settled_part(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    today = dt.datetime.now(dt.UTC).date()
    data.insert(store, "events", _open_day_traffic(today))
    build_closed_days(store, events_months=settings.events_retention_months)
    live = _answers(settings, store, base)
    built = build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 40), dt.UTC))
    assert built is not None and built.visits > 0
    # Only the visits that ended before 00:09 are stored: the fixture's first two landings and 700_002's first.
    stored = store.query_rows(
        f"SELECT visitor FROM {store.table('visits')} WHERE day = {{d:Date}} AND build = {{b:UInt64}} ORDER BY visitor",
        {"d": today, "b": built.build},
    )
    assert [int(v) for (v,) in stored] == [600_000, 600_001, 700_002]
    assert [p.day for p in partial_builds(store, [today])] == [today]
    assert _answers(settings, store, base) == live
    # Today's visits as a marketer reads them: 600_001 twice, 700_002 twice, the late chooser once.
    span = {"from": today.isoformat(), "to": today.isoformat()}
    assert run_query(store, settings, "aggregate", span).as_json()["results"][0]["visits"] == 3 + 2 + 2 + 1


def test_a_late_row_before_the_open_days_build_makes_the_day_live(
    traffic: tuple[Settings, dt.date], store: Store
) -> None:
    settings, base = traffic
    today = dt.datetime.now(dt.UTC).date()
    build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 40), dt.UTC))
    assert partial_builds(store, [today]) != []
    # A journal replay brings a hit from before the build's horizon: the build no longer matches.
    data.insert(store, "events", [data._row(ts=dt.datetime.combine(today, dt.time(0, 3), dt.UTC), visitor=600_000)])
    assert partial_builds(store, [today]) == []
    live = _answers(settings, store, base)
    build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 40), dt.UTC))
    assert partial_builds(store, [today]) != []
    assert _answers(settings, store, base) == live


def test_an_open_days_build_is_never_taken_for_the_whole_day(traffic: tuple[Settings, dt.date], store: Store) -> None:
    today = dt.datetime.now(dt.UTC).date()
    # Nothing arrives after the build, so its count is the whole day's: still not a whole build,
    # not even for a reader that knows only whole builds and compares counts (an older version's).
    build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 40), dt.UTC))
    assert today not in fresh_builds(store, today, today)[0]
    day_count = store.query_rows(
        f"SELECT count() FROM {store.table('events')} WHERE toDate(ts) = {{d:Date}}", {"d": today}
    )[0][0]
    recorded = store.query_rows(
        f"SELECT argMax(events, build) FROM {store.table('visit_builds')} WHERE day = {{d:Date}}", {"d": today}
    )[0][0]
    assert int(recorded) != int(day_count) and int(recorded) & ~OPEN_MARK == int(day_count)
    assert today in days_to_build(store, today, today)
    # Before 00:30 plus the lag nothing can have settled: no build.
    assert build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 20), dt.UTC)) is None
    # The whole build, once the day closes, replaces it.
    whole = build_day(store, today)
    _wait_for_mutations(store)
    assert fresh_builds(store, today, today)[0] == {today: whole.build}
    assert partial_builds(store, [today]) == []


def test_the_sums_of_built_days_count_people_not_visits(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    on = lambda day, hour: dt.datetime.combine(base + dt.timedelta(days=day), dt.time(hour), dt.UTC)  # noqa: E731
    data.insert(
        store,
        "events",
        [
            # one pseudonymised person, two visits of /p on one day: one person that day
            data._row(ts=on(0, 9), identified=0, visitor=900_001, path="/p"),
            data._row(ts=on(0, 11), identified=0, visitor=900_001, path="/p"),
            # one consented person on two days: one person over the range
            data._row(ts=on(0, 10), visitor=900_002, granted=data.NO_MARKETING, path="/p"),
            data._row(ts=on(1, 10), visitor=900_002, granted=data.NO_MARKETING, path="/p"),
            # pseudonymised keys of two days: counted once each day
            data._row(ts=on(0, 12), identified=0, visitor=900_003, path="/p"),
            data._row(ts=on(1, 12), identified=0, visitor=900_004, path="/p"),
            # an event sent twice in one visit, and once by two others each: 4 events of 3 people
            data._row(ts=on(0, 10) + dt.timedelta(minutes=1), kind="event", name="quiz", visitor=900_002, path="/p"),
            data._row(ts=on(0, 10) + dt.timedelta(minutes=2), kind="event", name="quiz", visitor=900_002, path="/p"),
            data._row(ts=on(0, 12) + dt.timedelta(minutes=1), kind="event", name="quiz", identified=0, visitor=900_003),
            data._row(ts=on(1, 8), kind="event", name="quiz", visitor=900_005, path="/q"),
        ],
    )
    span = {"from": base.isoformat(), "to": dt.datetime.now(dt.UTC).date().isoformat(), "dimension": "page"}

    def page_p() -> dict[str, Any]:
        rows = run_query(store, settings, "breakdown", {**span, "limit": "100"}).as_json()["results"]
        return next(row for row in rows if row["value"] == "/p")

    def quiz() -> tuple[dict[str, Any], dict[str, Any]]:
        names = run_query(store, settings, "breakdown", {**span, "dimension": "event_name"}).as_json()["results"]
        goals = run_query(store, settings, "goals", {"from": span["from"], "to": span["to"]}).as_json()["results"]
        return next(r for r in names if r["value"] == "quiz"), next(r for r in goals if r["value"] == "quiz")

    live, live_quiz = page_p(), quiz()
    assert (live["visitors"], live["pageviews"], live["events"]) == (1 + 2 + 1, 6, 2)
    assert (live_quiz[0]["visitors"], live_quiz[0]["events"], live_quiz[1]["conversions"]) == (3, 4, 4)
    build_closed_days(store, events_months=settings.events_retention_months)
    assert page_p() == live
    assert quiz() == live_quiz


def test_builds_stored_before_the_sums_get_theirs_when_migrated(
    traffic: tuple[Settings, dt.date], store: Store
) -> None:
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    span = {"from": base.isoformat(), "to": dt.datetime.now(dt.UTC).date().isoformat(), "dimension": "page"}
    answer = run_query(store, settings, "breakdown", span).as_json()
    # As a database migrated before the sums existed: builds, and no sums.
    store.command(f"TRUNCATE TABLE {store.table('visit_sums')}")
    migrations = store.table("schema_migrations")
    store.command(f"ALTER TABLE {migrations} DELETE WHERE version = 9 SETTINGS mutations_sync = 1")
    assert migrate(store) == [9]
    assert int(store.query_rows(f"SELECT count() FROM {store.table('visit_sums')}")[0][0]) > 0
    assert run_query(store, settings, "breakdown", span).as_json() == answer


def test_funnels_from_the_visits_steps_match_the_funnels_from_the_hits(
    traffic: tuple[Settings, dt.date], store: Store
) -> None:
    settings, _, span = _built(traffic, store)
    asked = [
        {**span, "steps": "page:/,page:/courses,event:enrol"},
        {**span, "steps": "page:/,page:/pricing"},
        {**span, "steps": "event:enrol,page:/courses"},
        {**span, "steps": "page:/,page:/courses,event:enrol", "utm_source": "google"},
        {**span, "steps": "page:/,page:/signup", "device": "desktop"},
    ]
    read: list[str] = []
    query_rows = store.query_rows

    def recording(sql: str, params: Any = None) -> Any:
        read.append(sql)
        return query_rows(sql, params)

    store.query_rows = recording  # type: ignore[method-assign]
    try:
        for params in asked:
            # Within a visit's gap the visits' steps answer; one second more and the hits do.
            read.clear()
            by_visits = run_query(store, settings, "funnel", {**params, "window": "1800"}).as_json()
            assert any("windowFunnel(1800)', " in sql for sql in read)
            read.clear()
            by_hits = run_query(store, settings, "funnel", {**params, "window": "1801"}).as_json()
            assert not any("arrayReduce('windowFunnel" in sql for sql in read)
            assert by_visits["results"] == by_hits["results"], params
    finally:
        store.query_rows = query_rows  # type: ignore[method-assign]
    landing = run_query(store, settings, "funnel", asked[0]).as_json()["results"]
    # The five people who chose on a landing page (the same five on each day) go on to enrol.
    assert [r["visitors"] for r in landing] == [37, 5, 5]


def test_a_build_without_the_steps_is_built_again(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    built = build_closed_days(store, events_months=settings.events_retention_months)
    today = dt.datetime.now(dt.UTC).date()
    assert days_to_build(store, base, today - dt.timedelta(days=1)) == []
    # As an earlier release's builder records a build: without the steps column.
    newest = built[0]
    store.insert_lines(
        "visit_builds",
        [f'["{newest.day.isoformat()}", {newest.build + 1}, {newest.events}]'.encode()],
        ["day", "build", "events"],
    )
    assert newest.day not in fresh_builds(store, base, today)[0]
    assert days_to_build(store, base, today - dt.timedelta(days=1)) == [newest.day]
    assert [b.day for b in build_closed_days(store, events_months=settings.events_retention_months)] == [newest.day]
    assert newest.day in fresh_builds(store, base, today)[0]


def test_a_build_of_the_earlier_format_is_built_again(traffic: tuple[Settings, dt.date], store: Store) -> None:
    """Format 1 (steps, exact key sets) is what the release before migration 11 records; each side
    rebuilds the other's builds, so neither reads sums or step ids it did not write."""
    settings, base = traffic
    built = build_closed_days(store, events_months=settings.events_retention_months)
    today = dt.datetime.now(dt.UTC).date()
    newest = built[0]
    store.insert_lines(
        "visit_builds",
        [f'["{newest.day.isoformat()}", {newest.build + 1}, {newest.events}, 1]'.encode()],
        ["day", "build", "events", "steps"],
    )
    assert newest.day not in fresh_builds(store, base, today)[0]
    assert [b.day for b in build_closed_days(store, events_months=settings.events_retention_months)] == [newest.day]
    assert newest.day in fresh_builds(store, base, today)[0]
    format_of = store.query_rows(
        f"SELECT argMax(steps, build) FROM {store.table('visit_builds')} WHERE day = {{day:Date}}", {"day": newest.day}
    )
    assert format_of == [(visits.BUILD_FORMAT,)]


def test_visits_stored_without_step_ids_get_them_from_their_steps(
    traffic: tuple[Settings, dt.date], store: Store
) -> None:
    settings, _ = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    table = store.table("visits")
    built = store.query_rows(f"SELECT count() FROM {table} WHERE step_ids != arrayMap(s -> cityHash64(s), steps)")
    assert built == [(0,)]
    assert store.query_rows(f"SELECT countIf(length(step_ids) > 0) > 0 FROM {table}") == [(1,)]
    # As an earlier release's builder stores a visit: without the column.
    store.command(
        f"INSERT INTO {table} (site, day, build, identified, visitor, step_ms, steps) "
        "VALUES ('old', today(), 1, 1, 42, [0, 5], ['p/', 'esignup'])"
    )
    ids = store.query_rows(
        f"SELECT step_ids, [cityHash64('p/'), cityHash64('esignup')] FROM {table} WHERE site = 'old'"
    )
    assert ids[0][0] == ids[0][1]


def test_the_hashed_visitor_sets_count_exactly_up_to_thousands(store: Store) -> None:
    """The k rule reads consented visitors from VISITOR_SET states (k is at most 1,000): on this
    engine every size up to 3,000 counts exactly, whole or merged from ten parts, for five key sets;
    a much larger set is an estimate, close but not exact."""
    fn = VISITOR_SET
    keys = """
        SELECT seed, n, cityHash64(seed, i) AS key, i % 10 AS piece
        FROM (SELECT number % 5 AS seed, 1 + intDiv(number, 5) * 7 AS n FROM numbers(5 * 429))
        ARRAY JOIN range(n) AS i"""
    whole = f"SELECT seed, n, {fn}(key) AS counted FROM ({keys}) GROUP BY seed, n"
    merged = f"""
        SELECT seed, n, {fn}Merge(part) AS counted
        FROM (SELECT seed, n, piece, {fn}State(key) AS part FROM ({keys}) GROUP BY seed, n, piece)
        GROUP BY seed, n"""
    for sets in (whole, merged):
        assert store.query_rows(f"SELECT count(), countIf(counted != n) FROM ({sets})") == [(5 * 429, 0)]
    sizes = store.query_rows("SELECT max(1 + intDiv(number, 5) * 7) FROM numbers(5 * 429)")
    assert sizes == [(2997,)]
    [(big,)] = store.query_rows(f"SELECT {fn}(cityHash64(number)) FROM numbers(200000)")
    assert big != 200000 and abs(big - 200000) < 200000 * 0.01


def test_the_open_keys_looked_up_or_not_give_the_same_answers(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, base = traffic
    today = dt.datetime.now(dt.UTC).date()
    data.insert(store, "events", _open_day_traffic(today))
    build_closed_days(store, events_months=settings.events_retention_months)
    live = _answers(settings, store, base)
    build_open_day(store, today, now=dt.datetime.combine(today, dt.time(0, 40), dt.UTC))
    [partial] = partial_builds(store, [today])
    opened = visits.look_up_open_keys(store, store.table("events"), partial, settings.site_id)
    # Seen since 00:09: the fixture's 00:14 landing (its pseudonym and the consented key its link
    # names), 600_001 (00:45), the late chooser and the pseudonym its link names, 700_002.
    pseudonym = 500_000 + 2 * 7 + today.day
    assert opened.keys == ((0, pseudonym), (0, 700_001), (0, 700_002), (1, 600_001), (1, 600_002), (1, 800_001))
    # Their hits may also carry the pseudonyms the consented keys' links of the day name: 600_001's
    # landing at 00:07 among them.
    assert opened.reach == tuple(
        sorted({500_000 + 7 + today.day, pseudonym, 600_001, 600_002, 700_001, 700_002, 800_001})
    )
    assert _answers(settings, store, base) == live
    # Past the bound the query finds the keys itself; the answers do not change.
    monkeypatch.setattr(visits, "OPEN_KEYS_INLINE", 3)
    assert visits.look_up_open_keys(store, store.table("events"), partial, settings.site_id).keys is None
    assert _answers(settings, store, base) == live


def test_an_open_day_with_one_open_key_or_none(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    today = dt.datetime.now(dt.UTC).date()
    at = dt.datetime.combine(today, dt.time(0, 0), dt.UTC)
    data.insert(store, "events", [data._row(ts=at + dt.timedelta(minutes=45), visitor=600_001, path="/again")])
    build_closed_days(store, events_months=settings.events_retention_months)
    live = _answers(settings, store, base)
    # Built at 01:10: hits to 01:09 read, the keys seen since 00:39 open (the fixture's are over by 00:15).
    build_open_day(store, today, now=at + dt.timedelta(minutes=70))
    [partial] = partial_builds(store, [today])
    assert visits.look_up_open_keys(store, store.table("events"), partial, settings.site_id).keys == ((1, 600_001),)
    assert _answers(settings, store, base) == live
    # Built after every hit had settled: no open key, the stored visits alone answer.
    build_open_day(store, today, now=at + dt.timedelta(hours=2))
    [partial] = partial_builds(store, [today])
    assert visits.look_up_open_keys(store, store.table("events"), partial, settings.site_id).keys == ()
    assert _answers(settings, store, base) == live


def test_visits_begun_before_the_raw_retention_are_left_out_built_or_not(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    """The first day of the raw retention is cut at this time of day: its visits that began before
    the cut count nowhere, while the whole days after it count in full, read as built or live."""
    settings = make_settings(k_anonymity=2)
    migrate(store)
    cut = store.query_rows("SELECT toDateTime64(now() - toIntervalMonth(3), 3, 'UTC')")[0][0].replace(tzinfo=dt.UTC)
    first = cut.date()
    midnight = dt.datetime.combine(first, dt.time(0, 0), dt.UTC)
    if cut - midnight < dt.timedelta(minutes=10):
        pytest.skip("the cut lies in the first minutes of its day: no room for a visit before it")
    before = midnight + (cut - midnight) / 2
    next_day = dt.datetime.combine(first + dt.timedelta(days=1), dt.time(12, 0), dt.UTC)
    rows = []
    for i, (at, path) in enumerate([(before, "/early")] * 3 + [(cut + dt.timedelta(minutes=5), "/late")] * 3):
        rows.append(data._row(ts=at + dt.timedelta(seconds=i), visitor=700_000 + i, path=path))
    rows += [data._row(ts=next_day + dt.timedelta(seconds=i), visitor=800_000 + i, path="/next") for i in range(3)]
    data.insert(store, "events", rows)
    stored = store.query_rows(
        f"SELECT count() FROM {store.table('events')} WHERE ts < {{cut:DateTime64(3)}}", {"cut": cut}
    )
    if stored[0][0] == 0:
        pytest.skip("the engine dropped the expired rows at insert: nothing before the cut to leave out")
    span = {"from": first.isoformat(), "to": dt.datetime.now(dt.UTC).date().isoformat()}

    def answers() -> list[Any]:
        aggregate = run_query(store, settings, "aggregate", span).as_json()
        pages = run_query(store, settings, "breakdown", {**span, "dimension": "entry_page"}).as_json()
        return [aggregate["results"], sorted((r["value"], r["visitors"]) for r in pages["results"])]

    live = answers()
    assert live[1] == [("/late", 3), ("/next", 3)]
    built = build_closed_days(store, events_months=settings.events_retention_months)
    assert first + dt.timedelta(days=1) in {b.day for b in built}
    assert answers() == live


def _built(traffic: tuple[Settings, dt.date], store: Store) -> tuple[Settings, dt.date, dict[str, str]]:
    """The traffic with its closed days built, and the span from its first day to today."""
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    return settings, base, {"from": base.isoformat(), "to": dt.datetime.now(dt.UTC).date().isoformat()}


def _range_rows(store: Store) -> list[tuple[Any, ...]]:
    return store.query_rows(
        f"SELECT builds, first_day, last_day, list, count() FROM {store.table('visit_range_sums')} "
        "GROUP BY builds, first_day, last_day, list ORDER BY builds, list"
    )


def test_a_ranges_sums_are_merged_once_and_answer_as_the_day_sums(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, base, span = _built(traffic, store)
    asked = [
        ("breakdown", {**span, "dimension": "page"}),
        ("breakdown", {**span, "dimension": "entry_page"}),
        ("aggregate", span),
        ("goals", span),
    ]
    first = [run_query(store, settings, e, p).as_json() for e, p in asked]
    stored = _range_rows(store)
    # One range (the three closed days), the lists these answers read, each merged once.
    assert {r[0] for r in stored} == {
        ranges.range_key(fresh_builds(store, base, base + dt.timedelta(days=2))[0].values())
    }
    assert {r[3] for r in stored} == {"", "converted", "page", "entry_page", "event_name"}
    assert {(r[1], r[2]) for r in stored} == {(base, base + dt.timedelta(days=2))}
    again = [run_query(store, settings, e, p).as_json() for e, p in asked]
    assert again == first
    assert _range_rows(store) == stored
    # Without the range sums (the day sums merged on every answer): the same numbers.
    monkeypatch.setattr("consent_gateway.analytics.queries.ready_range_sums", lambda *a, **k: None)
    assert [run_query(store, settings, e, p).as_json() for e, p in asked] == first


def test_two_answers_merging_one_range_at_once_count_it_once(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    fresh, _ = fresh_builds(store, base, base + dt.timedelta(days=2))
    span = {"from": base.isoformat(), "to": (base + dt.timedelta(days=2)).isoformat(), "dimension": "page"}
    answer = run_query(store, settings, "breakdown", span).as_json()
    key = ranges.range_key(fresh.values())
    stored = _range_rows(store)
    assert [r[0] for r in stored] == [key]
    # The second looked before the first stored: it sees nothing and merges the range again.
    query_rows = store.query_rows

    looked: list[str] = []

    def before_the_first(sql: str, params: Any = None) -> Any:
        if "groupUniqArray(list)" in sql and not looked:
            looked.append(sql)
            return []
        return query_rows(sql, params)

    store.query_rows = before_the_first  # type: ignore[method-assign]
    try:
        assert ranges.ready_range_sums(store, data.SITE, fresh, ["page"]) == key
    finally:
        store.query_rows = query_rows  # type: ignore[method-assign]
    assert looked
    # Stored twice or deduplicated by the server, the answer is the same.
    assert {r[:4] for r in _range_rows(store)} == {r[:4] for r in stored}
    assert run_query(store, settings, "breakdown", span).as_json() == answer


def test_a_site_merges_a_bounded_number_of_ranges_a_day(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, base, span = _built(traffic, store)
    monkeypatch.setattr(ranges, "RANGE_SUMS_A_DAY", 2)
    spans = [{**span, "from": (base + dt.timedelta(days=d)).isoformat()} for d in (0, 1, 2)]
    answers = [run_query(store, settings, "breakdown", {**s, "dimension": "page"}).as_json() for s in spans]
    assert len({r[0] for r in _range_rows(store)}) == 2
    # The third range is answered from the day sums, the same as with nothing merged.
    monkeypatch.setattr("consent_gateway.analytics.queries.ready_range_sums", lambda *a, **k: None)
    assert [run_query(store, settings, "breakdown", {**s, "dimension": "page"}).as_json() for s in spans] == answers


def test_erasure_deletes_the_ranges_over_the_consent_ids_days(traffic: tuple[Settings, dt.date], store: Store) -> None:
    settings, base = traffic
    build_closed_days(store, events_months=settings.events_retention_months)
    for first in (base, base + dt.timedelta(days=2)):
        fresh, _ = fresh_builds(store, first, base + dt.timedelta(days=2))
        assert ranges.ready_range_sums(store, data.SITE, fresh, ["page"]) is not None
    assert {(r[1], r[2]) for r in _range_rows(store)} == {
        (base, base + dt.timedelta(days=2)),
        (base + dt.timedelta(days=2), base + dt.timedelta(days=2)),
    }
    # 600_002's stored visits are on the first two days: the range over them goes, the other stays.
    erase_visitor(store, 600_002)
    assert {(r[1], r[2]) for r in _range_rows(store)} == {(base + dt.timedelta(days=2), base + dt.timedelta(days=2))}


def test_the_range_sums_keep_keys_no_longer_than_the_events(store: Store) -> None:
    def ddl(table: str) -> str:
        [(text,)] = store.query_rows(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            {"db": store.database, "t": table},
        )
        return str(text)

    migrate(store, events_months=3)
    migrate(store, events_months=2)
    for table in ("visit_range_sums", "visit_range_funnels"):
        assert "TTL least(first_day + toIntervalMonth(2), made + 1)" in ddl(table)


def _funnel_keys(store: Store) -> set[int]:
    return {int(k) for (k,) in store.query_rows(f"SELECT DISTINCT funnel FROM {store.table('visit_range_funnels')}")}


def test_a_funnels_closed_days_are_stored_once_and_answer_as_the_visits(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, span = _built(traffic, store)
    asked = [
        {**span, "steps": "page:/,page:/courses,event:enrol"},
        {**span, "steps": "page:/,page:/courses,event:enrol", "utm_source": "google"},
        {**span, "steps": "page:/,page:/signup", "device": "desktop"},
        {**span, "steps": "page:/,page:/courses,event:enrol", "window": "600"},
    ]
    first = [run_query(store, settings, "funnel", p).as_json() for p in asked]
    stored = _funnel_keys(store)
    assert len(stored) == len(asked)
    assert [run_query(store, settings, "funnel", p).as_json() for p in asked] == first
    assert _funnel_keys(store) == stored
    # The landing-page choosers are consented on the closed days and today: counted once each.
    assert [r["visitors"] for r in first[0]["results"]] == [37, 5, 5]
    monkeypatch.setattr("consent_gateway.analytics.queries.ready_range_funnel", lambda *a, **k: False)
    assert [run_query(store, settings, "funnel", p).as_json() for p in asked] == first


def test_erasure_deletes_the_funnels_over_the_consent_ids_days(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, span = _built(traffic, store)
    answer = run_query(store, settings, "funnel", {**span, "steps": "page:/,page:/courses"}).as_json()
    assert len(_funnel_keys(store)) == 1
    erase_visitor(store, 600_002)
    assert _funnel_keys(store) == set()
    # Its days are answered from the remaining rows (its landing hits, pseudonymised, count once a
    # day now), as without any funnel stored.
    after = run_query(store, settings, "funnel", {**span, "steps": "page:/,page:/courses"}).as_json()
    assert after != answer
    monkeypatch.setattr("consent_gateway.analytics.queries.ready_range_funnel", lambda *a, **k: False)
    assert run_query(store, settings, "funnel", {**span, "steps": "page:/,page:/courses"}).as_json() == after


def test_a_site_stores_a_bounded_number_of_funnels_a_day(
    traffic: tuple[Settings, dt.date], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, span = _built(traffic, store)
    monkeypatch.setattr(ranges, "RANGE_SUMS_A_DAY", 1)
    asked = [{**span, "steps": "page:/,page:/courses"}, {**span, "steps": "page:/,page:/signup"}]
    answers = [run_query(store, settings, "funnel", p).as_json() for p in asked]
    assert len(_funnel_keys(store)) == 1
    monkeypatch.setattr("consent_gateway.analytics.queries.ready_range_funnel", lambda *a, **k: False)
    assert [run_query(store, settings, "funnel", p).as_json() for p in asked] == answers
