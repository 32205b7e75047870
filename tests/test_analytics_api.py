"""The analytics API over a generated data set with known answers, on the real embedded ClickHouse."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from consent_gateway import Settings, SettingsError, create_analytics_app
from consent_gateway.analytics import TokenStore
from consent_gateway.store import Store, migrate

from . import analytics_data as data


@pytest.fixture
def base() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)


@pytest.fixture
def loaded(
    make_settings: Callable[..., Settings], store: Store, base: dt.date
) -> tuple[Settings, Store, list[dict[str, Any]]]:
    settings = make_settings()
    migrate(store)
    rows = data.build_rows(base)
    data.insert(store, "events", rows)
    data.insert(store, "consent_receipts", data.build_receipts(base))
    return settings, store, rows


@pytest.fixture
def token(loaded: tuple[Settings, Store, list[dict[str, Any]]]) -> str:
    return TokenStore(loaded[0].tokens_path).create("marketing-team")[0]


@pytest.fixture
def client(loaded: tuple[Settings, Store, list[dict[str, Any]]], token: str) -> Iterator[TestClient]:
    settings, store, _ = loaded
    with TestClient(create_analytics_app(settings, store=store)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def rng(base: dt.date, days: int = 3) -> dict[str, str]:
    return {"from": base.isoformat(), "to": (base + dt.timedelta(days=days - 1)).isoformat()}


def get(client: TestClient, endpoint: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/{endpoint}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- numbers --------------------------------------------------------------------------------------


def test_aggregate_matches_the_known_answers(client: TestClient, loaded: Any, base: dt.date) -> None:
    body = get(client, "aggregate", **rng(base))
    row = body["results"][0]
    # Worked out by hand from the data set's description (see tests/analytics_data.py); visit
    # duration and conversions are in tests/test_analytics_headline.py.
    assert {c: row[c] for c in data.expected_aggregate(loaded[2])} == {
        "visitors": 32,
        "visits": 45,
        "pageviews": 83,
        "events": 14,
        "views_per_visit": 1.84,
        "bounce_rate": 0.4222,
    }
    assert {c: row[c] for c in data.expected_aggregate(loaded[2])} == data.expected_aggregate(loaded[2])
    assert body["estimates"] == ["visitors", "conversions"]
    assert "once per day" in body["notes"]["visitors"]
    assert body["source"] == "raw" and body["suppressed"] is False


def test_pseudonymised_keys_never_link_across_days(client: TestClient, base: dt.date) -> None:
    # P1..P6 come on three days: one day alone gives 6, the range gives 18 visitor-days, not 6.
    tablet_one_day = get(client, "aggregate", device="tablet", **rng(base, 1))["results"][0]
    tablet_range = get(client, "aggregate", device="tablet", **rng(base))["results"][0]
    assert tablet_one_day["visitors"] == 6
    assert tablet_range["visitors"] == 18
    # Consented keys do link: C7..C12 visit on two days and count once.
    desktop = get(client, "aggregate", device="desktop", **rng(base))["results"][0]
    assert desktop["visitors"] == 6


def test_timeseries_by_day_and_week(client: TestClient, base: dt.date) -> None:
    body = get(client, "timeseries", interval="day", **rng(base, 4))
    by_date = {r["date"]: r for r in body["results"]}
    d = [(base + dt.timedelta(days=i)).isoformat() for i in range(4)]
    assert [by_date[x]["visitors"] for x in d] == [18, 18, 8, 0]
    assert [by_date[x]["pageviews"] for x in d] == [36, 37, 10, 0]
    assert [by_date[x]["events"] for x in d] == [7, 7, 0, 0]
    weekly = get(client, "timeseries", interval="week", **rng(base))["results"]
    assert sum(r["pageviews"] for r in weekly) == 83
    hourly = get(client, "timeseries", interval="hour", **rng(base, 1))["results"]
    assert len(hourly) == 24
    assert sum(r["pageviews"] or 0 for r in hourly) == 36
    assert hourly[9]["date"].endswith("T09:00:00Z") and hourly[9]["pageviews"] == 36


@pytest.mark.parametrize(
    "dimension",
    [
        "device",
        "browser",
        "os",
        "page",
        "referrer_host",
        "utm_source",
        "utm_campaign",
        "event_name",
        "click_attribution",
    ],
)
def test_breakdown_matches_a_second_computation(client: TestClient, loaded: Any, base: dt.date, dimension: str) -> None:
    body = get(client, "breakdown", dimension=dimension, limit=100, **rng(base))
    shown, hidden, other = data.expected_breakdown(loaded[2], dimension)
    got = {r["value"]: {k: r[k] for k in ("visitors", "pageviews", "events")} for r in body["results"]}
    folded = got.pop("other (suppressed)", None)
    assert got == shown
    assert body["suppressed_groups"] == hidden
    assert folded == other and body["other_shown"] is (other is not None)


def test_a_lone_small_group_is_never_shown_not_even_as_other(client: TestClient, base: dt.date) -> None:
    browsers = get(client, "breakdown", dimension="browser", **rng(base))
    values = [r["value"] for r in browsers["results"]]
    # RareBrowser (2 people) is the only small group: an "other" row would be that group itself.
    assert sorted(values) == ["Chrome", "Firefox", "Safari"]
    assert browsers["suppressed_groups"] == 1 and browsers["other_shown"] is False
    pages = get(client, "breakdown", dimension="page", **rng(base))
    # /secret (2 visitors) and /blog (1) fold to 3 people, fewer than k: no "other" row either.
    assert {r["value"] for r in pages["results"]} == {"/", "/pricing", "/signup"}
    assert pages["suppressed_groups"] == 2 and pages["other_shown"] is False
    # A page's events are the ones sent from it: six sign-ups on /signup (both days), C7's downloads on /pricing.
    events = {r["value"]: r["events"] for r in pages["results"]}
    assert events == {"/": 0, "/pricing": 2, "/signup": 12}
    # A filter that narrows the headline numbers to two people suppresses them too.
    rare = get(client, "aggregate", browser="RareBrowser", **rng(base))
    assert rare["suppressed"] is True and rare["results"][0]["visitors"] is None


def test_k_is_a_setting(make_settings: Callable[..., Settings], loaded: Any, token: str, base: dt.date) -> None:
    settings = make_settings(k_anonymity=2)
    with TestClient(create_analytics_app(settings, store=loaded[1])) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        browsers = get(c, "breakdown", dimension="browser", **rng(base))
    assert {"value": "RareBrowser", "visitors": 2, "pageviews": 4, "events": 0} in browsers["results"]
    assert browsers["k"] == 2


def test_campaigns_come_only_from_marketing_consent(client: TestClient, base: dt.date) -> None:
    body = get(client, "breakdown", dimension="utm_campaign", **rng(base))
    spring = next(r for r in body["results"] if r["value"] == "spring")
    # C1..C8 granted marketing; C9..C12 and the 18 pseudonymised visitor-days also carry "spring".
    assert spring["visitors"] == 8
    assert "marketing" in body["notes"]
    filtered = get(client, "aggregate", utm_campaign="spring", **rng(base))["results"][0]
    # The campaign follows the visit: all pages of their day-0 visits (C1-C6 three, C7-C8 two).
    assert filtered["visitors"] == 8 and filtered["pageviews"] == 6 * 3 + 2 * 2
    # utm_source is not a marketing dimension: every row counts.
    source = get(client, "breakdown", dimension="utm_source", **rng(base))
    newsletter = next(r for r in source["results"] if r["value"] == "newsletter")
    assert newsletter["visitors"] == 12 + 18


def test_entry_pages_and_bounces(client: TestClient, base: dt.date) -> None:
    body = get(client, "breakdown", dimension="entry_page", **rng(base))
    rows = {r["value"]: r for r in body["results"]}
    assert rows["/"]["visits"] == 24 + 18 + 2
    # The 18 pseudonymised visits are single page views; C13/C14 viewed two pages.
    assert rows["/"]["bounce_rate"] == round(18 / 44, 4)
    # C1's second visit, entering on /blog, is one person in one group: never shown, not even folded.
    assert "/blog" not in rows and "other (suppressed)" not in rows
    assert body["suppressed_groups"] == 1


def test_funnel(client: TestClient, base: dt.date) -> None:
    body = get(client, "funnel", steps="page:/,page:/pricing,event:signup", window="1800", **rng(base))
    assert [r["visitors"] for r in body["results"]] == [32, 12, 6]
    assert [r["conversion"] for r in body["results"]] == [1.0, 0.375, 0.1875]
    # Order matters: nobody signs up before seeing the home page.
    backwards = get(client, "funnel", steps="event:signup,page:/", **rng(base))["results"]
    assert [r["visitors"] for r in backwards] == [6, 0]
    # One visitor reaches /blog after /pricing: a step that small is suppressed.
    small = get(client, "funnel", steps="page:/pricing,page:/blog", window="86400", **rng(base))["results"]
    assert small[0]["visitors"] == 12 and small[1]["visitors"] is None and small[1]["suppressed"] is True
    # Outside the window: /pricing comes 60 s after /, so a 30 s window stops there.
    tight = get(client, "funnel", steps="page:/,page:/pricing", window="30", **rng(base))["results"]
    assert tight[1]["visitors"] == 0


def test_consent_rates(client: TestClient, base: dt.date) -> None:
    body = get(client, "consent-rates", **rng(base))
    day0, day1, day2 = body["results"]
    assert day0 == {
        "date": base.isoformat(),
        "visitors": 10,
        "necessary": 1.0,
        "preferences": 0.8,
        "analytics": 0.8,
        "marketing": 0.8,
        "suppressed": False,
    }
    assert day1["suppressed"] is True and day1["visitors"] is None
    assert day2["visitors"] == 0
    # 13 choices minus day 0's 10 would give day 1's suppressed 3: the total is withheld.
    assert body["total"] == {"choices": None, "suppressed": True}


def test_csv_export(client: TestClient, base: dt.date) -> None:
    response = client.get("/api/v1/breakdown", params={"dimension": "device", "format": "csv", **rng(base)})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["value", "visitors", "pageviews", "events"]
    assert ["tablet", "18", "18", "0"] in table


# -- rollups ----------------------------------------------------------------------------------------


def test_the_rollup_cannot_be_forced(client: TestClient, base: dt.date) -> None:
    # The rollup counts hits, not people: one person with six page views would pass k = 5 there.
    for endpoint, extra in (("aggregate", {}), ("timeseries", {}), ("breakdown", {"dimension": "page"})):
        response = client.get(f"/api/v1/{endpoint}", params={"source": "rollup", **extra, **rng(base)})
        assert response.status_code == 400, endpoint
        assert response.json()["field"] == "source" and "hits, not people" in response.json()["error"]


def test_rollup_holds_no_visitor_keys(loaded: Any) -> None:
    store = loaded[1]
    columns = {
        row[0]: row[1]
        for row in store.query_rows(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events_daily'",
            {"db": store.database},
        )
    }
    assert "visitor" not in columns and "click_id" not in columns and "ip_prefix" not in columns
    # Plain counts only: no uniq*/HLL states, which would hold hashes of the visitor keys.
    assert [t for t in columns.values() if "AggregateFunction" in t] == ["SimpleAggregateFunction(sum, UInt64)"]


def test_ranges_before_raw_retention_are_cut_not_served_from_the_rollup(
    client: TestClient, loaded: Any, base: dt.date
) -> None:
    # Rows older than raw retention: still in the rollup, never read from the raw table.
    old = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=150)
    data.insert(
        loaded[1],
        "events",
        [
            data._row(
                ts=dt.datetime.combine(old, dt.time(12), dt.UTC) + dt.timedelta(seconds=i),
                identified=1,
                visitor=50_000 + i,
            )
            for i in range(7)
        ],
    )
    assert (
        loaded[1].query_rows(
            f"SELECT sum(hits) FROM {loaded[1].table('events_daily')} WHERE day = {{d:Date}}", {"d": old}
        )[0][0]
        == 7
    )
    body = get(
        client,
        "aggregate",
        **{"from": (old - dt.timedelta(days=1)).isoformat(), "to": (base + dt.timedelta(days=2)).isoformat()},
    )
    assert body["source"] == "raw"
    assert body["results"][0]["pageviews"] == 83
    assert body["query"]["from"] > old.isoformat() and "raw events are kept only from" in body["notes"]["range"]
    refused = client.get("/api/v1/aggregate", params={"from": old.isoformat(), "to": old.isoformat()})
    assert refused.status_code == 400 and refused.json()["field"] == "to"
    assert "ask for dates from" in refused.json()["error"]


# -- auth and logging -------------------------------------------------------------------------------


def test_auth(loaded: Any, token: str, base: dt.date, caplog: pytest.LogCaptureFixture) -> None:
    settings, store, _ = loaded
    tokens = TokenStore(settings.tokens_path)
    expiring, _ = tokens.create("contractor", expires_days=1)
    expired, _ = tokens.create("last-year", expires_days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    caplog.set_level(logging.DEBUG)
    with TestClient(create_analytics_app(settings, store=store)) as c:
        assert c.get("/api/v1/aggregate").status_code == 401
        assert c.get("/api/v1/aggregate", headers={"Authorization": "Bearer cga_wrong"}).status_code == 401
        assert c.get("/api/v1/aggregate", headers={"Authorization": f"Basic {token}"}).status_code == 401
        ok = c.get("/api/v1/aggregate", params=rng(base), headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert c.get("/api/v1/aggregate", headers={"Authorization": f"Bearer {expiring}"}).status_code == 200
        assert c.get("/api/v1/aggregate", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        assert tokens.revoke("marketing-team") == 1
        revoked = c.get("/api/v1/aggregate", headers={"Authorization": f"Bearer {token}"})
        assert revoked.status_code == 401 and revoked.headers["www-authenticate"] == "Bearer"
    # An expired token: verified as of a day later than its expiry.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert tokens.verify(expiring, now=later) is None
    assert tokens.verify(expiring) is not None
    text = caplog.text
    assert "token=marketing-team status=200" in text
    assert token not in text and expiring not in text and expired not in text
    stored = settings.tokens_path.read_text()
    assert token not in stored and expiring not in stored
    assert oct(settings.tokens_path.stat().st_mode & 0o777) == "0o600"
    assert [r.status(dt.datetime.now(dt.UTC)) for r in tokens.records()] == ["revoked", "active", "expired"]


def test_k_anonymity_setting_is_checked(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError) as info:
        make_settings(k_anonymity=0)
    assert info.value.key == "k_anonymity"


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"foo": "1"}, "foo"),
        ({"dimension": "device", "limit": "0"}, "limit"),
        ({"dimension": "device", "limit": "ten"}, "limit"),
        ({"dimension": "visitor"}, "dimension"),
        ({"dimension": "device); DROP TABLE events; --"}, "dimension"),
        ({"dimension": "device", "period": "forever"}, "period"),
        ({"dimension": "device", "from": "2026-02-30", "to": "2026-03-01"}, "from"),
        ({"dimension": "device", "from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ({"dimension": "device", "from": "2026-03-01"}, "to"),
        ({"dimension": "device", "format": "xml"}, "format"),
        ({"dimension": "device", "site": "a'b"}, "site"),
        ({"dimension": "device", "entry_page": "/"}, "entry_page"),
        ({}, "dimension"),
    ],
)
def test_bad_parameters_are_named(client: TestClient, params: dict[str, str], named: str) -> None:
    response = client.get("/api/v1/breakdown", params=params)
    assert response.status_code == 400
    assert response.json()["field"] == named
    assert named in response.json()["error"]


def test_repeated_and_endpoint_specific_parameters(client: TestClient) -> None:
    twice = client.get("/api/v1/aggregate?device=a&device=b")
    assert twice.status_code == 400 and "twice" in twice.json()["error"]
    assert client.get("/api/v1/aggregate", params={"interval": "day"}).json()["field"] == "interval"
    assert client.get("/api/v1/funnel", params={"steps": "page:/"}).json()["field"] == "steps"
    assert client.get("/api/v1/funnel", params={"steps": "click:/a,page:/b"}).json()["field"] == "steps"
    assert client.get("/api/v1/timeseries", params={"interval": "minute"}).json()["field"] == "interval"
    assert client.get("/api/v1/nope").status_code == 404


def test_injection_attempts_are_data_not_sql(client: TestClient, loaded: Any, base: dt.date) -> None:
    store = loaded[1]
    before = store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0]
    hostile = "x' OR 1=1) UNION ALL SELECT visitor FROM events --"
    for params in ({"page": hostile}, {"device": "mobile'; DROP TABLE events; --"}, {"utm_campaign": "{site:String}"}):
        body = get(client, "aggregate", **params, **rng(base))
        # Treated as a value no row has: nothing counted, nothing leaked, nothing dropped.
        assert body["results"][0]["pageviews"] == 0
    funnel = get(client, "funnel", steps="page:' OR 1=1 --,event:signup", **rng(base))
    assert funnel["results"][0]["visitors"] == 0
    assert store.query_rows(f"SELECT count() FROM {store.table('events')}")[0][0] == before
    # Names that are not on the fixed list never reach SQL.
    assert client.get("/api/v1/breakdown", params={"dimension": "path FROM system.users --"}).status_code == 400


def test_a_few_pseudonymised_people_on_many_days_stay_suppressed(
    client: TestClient, loaded: Any, base: dt.date
) -> None:
    # Two people, pseudonymised, on three days: six visitor-days, but never more than two a day.
    rows = [
        data._row(
            site="other-site",
            ts=dt.datetime.combine(base + dt.timedelta(days=day), dt.time(8), dt.UTC) + dt.timedelta(seconds=p),
            identified=0,
            visitor=700_000 + 10 * p + day,
            browser="Vivaldi",
        )
        for p in range(2)
        for day in range(3)
    ]
    rows += [
        data._row(
            site="other-site",
            ts=dt.datetime.combine(base, dt.time(9), dt.UTC) + dt.timedelta(seconds=i),
            identified=1,
            visitor=800_000 + i,
            browser="Chrome",
        )
        for i in range(5)
    ]
    data.insert(loaded[1], "events", rows)
    other_site = TokenStore(loaded[0].tokens_path).create("other-team", sites=["other-site"])[0]
    client.headers["Authorization"] = f"Bearer {other_site}"
    body = get(client, "breakdown", site="other-site", dimension="browser", **rng(base))
    assert [r["value"] for r in body["results"]] == ["Chrome"] and body["suppressed_groups"] == 1
    single = get(client, "aggregate", site="other-site", browser="Vivaldi", **rng(base))
    assert single["suppressed"] is True
