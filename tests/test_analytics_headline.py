"""Headline figures against the previous period, goals with conversion rates, visitors right now,
exit pages, filtering by an empty value, and read-only shared links: exact numbers on the real
embedded ClickHouse over the generated data set of tests/analytics_data.py."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from consent_gateway import Settings, SettingsError, create_analytics_app
from consent_gateway.analytics import Analytics, Query, TokenStore, share_link
from consent_gateway.store import Store, migrate

from . import analytics_data as data


@pytest.fixture
def base() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)


@pytest.fixture
def loaded(make_settings: Callable[..., Settings], store: Store, base: dt.date) -> tuple[Settings, Store]:
    settings = make_settings()
    migrate(store)
    data.insert(store, "events", data.build_rows(base))
    data.insert(store, "consent_receipts", data.build_receipts(base))
    return settings, store


@pytest.fixture
def client(loaded: tuple[Settings, Store]) -> Iterator[TestClient]:
    settings, store = loaded
    token, _ = TokenStore(settings.tokens_path).create("marketing-team")
    with TestClient(create_analytics_app(settings, store=store)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def rng(start: dt.date, days: int = 3) -> dict[str, str]:
    return {"from": start.isoformat(), "to": (start + dt.timedelta(days=days - 1)).isoformat()}


def get(client: TestClient, endpoint: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/{endpoint}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_headline_figures_over_three_days(client: TestClient, base: dt.date) -> None:
    row = get(client, "aggregate", **rng(base))["results"][0]
    # Visit lengths (first to last page view): C1-C6 120 s on two days, C7-C12 60 s on two days,
    # C1's second visit and the 18 pseudonymised ones 0 s, C13 and C14 1 s: 2162 s over 45 visits.
    assert row["visit_duration"] == 48
    # Conversions (every event name is a goal): C1-C6 sent signup, C7 download: 7 of 32 visitors.
    assert row["conversions"] == 7
    assert row["conversion_rate"] == 0.2188


def test_comparison_with_the_previous_day(client: TestClient, base: dt.date) -> None:
    body = get(client, "aggregate", compare="previous", **rng(base + dt.timedelta(days=1), 1))
    today = body["results"][0]
    before = body["comparison"]["results"][0]
    assert body["comparison"]["from"] == body["comparison"]["to"] == base.isoformat()
    assert body["query"]["compare"] == "previous"
    # Day 0: 12 consented visits (C1-C6 three pages, C7-C12 two) and 6 pseudonymised bounces.
    assert before == {
        "visitors": 18,
        "visits": 18,
        "pageviews": 36,
        "events": 7,
        "views_per_visit": 2.0,
        "bounce_rate": 0.3333,
        "visit_duration": 60,
        "conversions": 7,
        "conversion_rate": 0.3889,
    }
    # Day 1: the same plus C1's second visit, one page of /blog two hours later.
    assert today == {
        "visitors": 18,
        "visits": 19,
        "pageviews": 37,
        "events": 7,
        "views_per_visit": 1.95,
        "bounce_rate": 0.3684,
        "visit_duration": 57,
        "conversions": 7,
        "conversion_rate": 0.3889,
    }
    # Counts change by a ratio, rates by their difference.
    assert body["comparison"]["change"] == {
        "visitors": 0.0,
        "visits": 0.0556,
        "pageviews": 0.0278,
        "events": 0.0,
        "views_per_visit": -0.025,
        "bounce_rate": 0.0351,
        "visit_duration": -0.05,
        "conversions": 0.0,
        "conversion_rate": 0.0,
    }


def test_a_change_from_nothing_is_not_a_number(client: TestClient, base: dt.date) -> None:
    body = get(client, "aggregate", compare="previous", **rng(base))
    assert body["comparison"]["results"][0]["visitors"] == 0
    change = body["comparison"]["change"]
    assert change["visitors"] is None and change["pageviews"] is None
    assert change["bounce_rate"] == 0.4222


def test_comparison_before_the_raw_data_says_so(client: TestClient) -> None:
    today = dt.datetime.now(dt.UTC).date()
    body = get(client, "aggregate", compare="previous", period="12mo")
    assert body["comparison"]["available"] is False and body["comparison"]["change"] == {}
    assert "not covered" in body["notes"]["compare"]
    assert body["query"]["to"] == today.isoformat()


def test_comparison_of_a_small_period_stays_hidden(client: TestClient, base: dt.date) -> None:
    # Day 2 of RareBrowser holds two people: the previous day has nobody; neither reveals them.
    body = get(client, "aggregate", compare="previous", browser="RareBrowser", **rng(base + dt.timedelta(days=2), 1))
    assert body["suppressed"] is True and body["results"][0]["visitors"] is None
    assert all(v is None for v in body["comparison"]["change"].values())


def test_goals_named_in_the_query(client: TestClient, base: dt.date) -> None:
    body = get(client, "goals", goals="event:signup,page:/pricing,event:download,page:/nothing", **rng(base))
    assert body["visitors"] == 32
    assert body["results"] == [
        {
            "goal": "event:signup",
            "kind": "event",
            "value": "signup",
            "visitors": 6,
            "conversions": 12,
            "conversion_rate": 0.1875,
            "suppressed": False,
        },
        {
            "goal": "page:/pricing",
            "kind": "page",
            "value": "/pricing",
            "visitors": 12,
            "conversions": 24,
            "conversion_rate": 0.375,
            "suppressed": False,
        },
        # C7 alone sent "download": one person, hidden.
        {
            "goal": "event:download",
            "kind": "event",
            "value": "download",
            "visitors": None,
            "conversions": None,
            "conversion_rate": None,
            "suppressed": True,
        },
        {
            "goal": "page:/nothing",
            "kind": "page",
            "value": "/nothing",
            "visitors": 0,
            "conversions": 0,
            "conversion_rate": 0.0,
            "suppressed": False,
        },
    ]


def test_goals_from_the_event_names(client: TestClient, base: dt.date) -> None:
    body = get(client, "goals", **rng(base))
    assert [(r["goal"], r["visitors"], r["conversions"], r["conversion_rate"]) for r in body["results"]] == [
        ("event:signup", 6, 12, 0.1875)
    ]
    # "download" (one person) is left out and counted, never named.
    assert body["suppressed_groups"] == 1
    assert "download" not in str(body)


def test_headline_conversions_follow_the_goals(client: TestClient, base: dt.date) -> None:
    row = get(client, "aggregate", goals="page:/signup,event:signup", **rng(base))["results"][0]
    assert (row["conversions"], row["conversion_rate"]) == (6, 0.1875)
    small = get(client, "aggregate", goals="event:download", **rng(base))["results"][0]
    assert small["conversions"] is None and small["conversion_rate"] is None and small["visitors"] == 32


def test_goal_parameters_are_checked(client: TestClient) -> None:
    for bad in ("signup", "event:", ",".join(f"page:/a{i}" for i in range(21))):
        response = client.get("/api/v1/goals", params={"goals": bad})
        assert response.status_code == 400 and response.json()["field"] == "goals", bad
    assert client.get("/api/v1/aggregate", params={"compare": "last-year"}).json()["field"] == "compare"


def test_exit_pages(client: TestClient, base: dt.date) -> None:
    body = get(client, "breakdown", dimension="exit_page", **rng(base))
    assert body["columns"] == ["value", "visitors", "visits", "bounce_rate"]
    assert body["results"] == [
        {"value": "/", "visitors": 18, "visits": 18, "bounce_rate": 1.0},
        {"value": "/pricing", "visitors": 6, "visits": 12, "bounce_rate": 0.0},
        {"value": "/signup", "visitors": 6, "visits": 12, "bounce_rate": 0.0},
    ]
    # /blog (C1) and /secret (C13, C14): two small groups of three people together, never shown.
    assert body["suppressed_groups"] == 2 and body["other_shown"] is False


def test_the_empty_value_can_be_filtered(client: TestClient, base: dt.date) -> None:
    # No referrer: every consented visitor C1-C14; their page views are all but the 18 from search.
    row = get(client, "aggregate", referrer_host="(none)", **rng(base))["results"][0]
    assert (row["visitors"], row["pageviews"]) == (14, 65)
    # Click attribution keeps its own "(none)": marketing-consented rows without a click id.
    none = get(client, "aggregate", click_attribution="(none)", **rng(base))["results"][0]
    # C1-C8, C13 and C14 granted marketing; C1-C4 carry a click id on their landing page only.
    assert none["visitors"] == 10


def _hit(ts: dt.datetime, visitor: int, identified: int, path: str = "/") -> dict[str, Any]:
    row = data.build_rows(ts.date())[0]
    return {**row, "event_id": uuid.uuid4(), "ts": ts, "visitor": visitor, "identified": identified, "path": path}


def test_visitors_in_the_last_30_minutes(loaded: tuple[Settings, Store]) -> None:
    settings, store = loaded
    now = dt.datetime(2030, 1, 1, 0, 10, tzinfo=dt.UTC)
    rows = [_hit(now - dt.timedelta(minutes=m), 50_000 + m, 1) for m in range(1, 5)]
    # One pseudonymised person on both sides of midnight: two keys, but never two people for k.
    rows += [_hit(now - dt.timedelta(minutes=2), 60_001, 0), _hit(now - dt.timedelta(minutes=20), 60_002, 0)]
    rows.append(_hit(now - dt.timedelta(minutes=45), 50_099, 1))  # too early
    data.insert(store, "events", rows)
    analytics = Analytics(store, settings)
    query = Query.from_items("realtime", [], default_site=data.SITE)
    hidden = analytics.run(query, now=now)
    # 4 consented + at most 1 pseudonymised person a day: fewer than k = 5 provable people.
    assert hidden.rows == [{"visitors": None, "pageviews": None, "suppressed": True}]
    data.insert(store, "events", [_hit(now - dt.timedelta(minutes=29), 50_100, 1, "/pricing")])
    shown = analytics.run(query, now=now)
    assert shown.rows == [{"visitors": 7, "pageviews": 7, "suppressed": False}]
    assert shown.meta["since"] == "2029-12-31T23:40:00+00:00"
    assert shown.meta["query"] == {"site": data.SITE}  # a range would mean nothing here


# -- shared links ------------------------------------------------------------------------------------


def test_a_shared_link_reads_one_site_and_nothing_else(loaded: tuple[Settings, Store], base: dt.date) -> None:
    settings, store = loaded
    tokens = TokenStore(settings.tokens_path)
    token, record = tokens.create_share(data.SITE, expires_days=7)
    assert token.startswith("cgs_") and record.kind == "share" and record.sites == (data.SITE,)
    assert token not in repr(record)
    link = share_link("https://stats.example/_analytics/", data.SITE, token)
    assert link == f"https://stats.example/_analytics/?site={data.SITE}#share={token}"
    with TestClient(create_analytics_app(settings, store=store)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        for endpoint, extra in (
            ("aggregate", {"compare": "previous"}),
            ("timeseries", {"interval": "day"}),
            ("breakdown", {"dimension": "page"}),
            ("goals", {}),
            ("funnel", {"steps": "page:/,event:signup"}),
            ("consent-rates", {}),
        ):
            assert c.get(f"/api/v1/{endpoint}", params={**rng(base), **extra}).status_code == 200, endpoint
        assert c.get("/api/v1/realtime").status_code == 200
        other = c.get("/api/v1/aggregate", params={"site": "another-site"})
        assert other.status_code == 403 and other.json()["field"] == "site"
        tokens.revoke(record.name)
        assert c.get("/api/v1/aggregate").status_code == 401


def test_a_shared_link_expires(loaded: tuple[Settings, Store]) -> None:
    settings, _ = loaded
    tokens = TokenStore(settings.tokens_path)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    token, record = tokens.create_share(data.SITE, expires_days=2, now=past)
    assert tokens.verify(token) is None
    assert [r.name for r in tokens.shares(site=data.SITE)] == [record.name]
    assert record.status(dt.datetime.now(dt.UTC)) == "expired"


def test_a_shared_link_cannot_call_what_the_dashboard_does_not(loaded: tuple[Settings, Store]) -> None:
    settings, store = loaded
    token, record = TokenStore(settings.tokens_path).create_share(data.SITE)
    assert record.may_call("aggregate") and not record.may_call("keys") and not record.may_call("export-all")
    with TestClient(create_analytics_app(settings, store=store)) as c:
        # Unknown endpoints stay 404 for API tokens; for a shared link they are refused first.
        response = c.get("/api/v1/export-all", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403 and "read-only shared link" in response.json()["error"]


def test_shared_link_rules(loaded: tuple[Settings, Store]) -> None:
    settings, _ = loaded
    tokens = TokenStore(settings.tokens_path)
    with pytest.raises(SettingsError, match="expires after"):
        tokens.create_share(data.SITE, expires_days=0)
    with pytest.raises(SettingsError, match="expires after"):
        tokens.create_share(data.SITE, expires_days=400)
    with pytest.raises(SettingsError):
        tokens.create_share("bad site!")
    with pytest.raises(SettingsError, match="always expires"):
        tokens.create("x", sites=[data.SITE, "b"], expires_days=3, kind="share")
    _, api = tokens.create("team")
    assert api.kind == "api" and '"kind"' not in settings.tokens_path.read_text()
    _, shared = tokens.create_share(data.SITE, name="for-agency")
    assert shared.name == "for-agency" and tokens.shares() == (shared,)


def test_filters_select_whole_visits(client: TestClient, base: dt.date) -> None:
    # A page filter keeps the visits that saw the page: C1-C12 on two days (C1's later /blog visit
    # is left out), none of them a bounce; page views are those of the page.
    row = get(client, "aggregate", page="/pricing", **rng(base))["results"][0]
    assert (row["visitors"], row["visits"], row["pageviews"], row["bounce_rate"]) == (12, 24, 24, 0.0)
    assert row["visit_duration"] == 90  # 12 visits of 120 s and 12 of 60 s
    assert row["views_per_visit"] == 2.5  # 12 visits of three pages and 12 of two
    # The campaign's landing page view carries utm_source: its visit goes on to the next pages.
    # Day 0: C1-C12 (one visit each, no bounce) and the 18 one-page visits of P1-P6.
    row = get(client, "aggregate", utm_source="newsletter", **rng(base))["results"][0]
    assert (row["visits"], row["bounce_rate"], row["visit_duration"], row["views_per_visit"]) == (30, 0.6, 36, 1.6)
    # Entry pages under a page filter are those of the visits that saw it.
    entries = get(client, "breakdown", dimension="entry_page", page="/pricing", **rng(base))["results"]
    assert entries == [{"value": "/", "visitors": 12, "visits": 24, "bounce_rate": 0.0}]


def test_the_series_of_the_previous_period(client: TestClient, base: dt.date) -> None:
    body = get(client, "timeseries", compare="previous", **rng(base + dt.timedelta(days=1), 2))
    assert [r["pageviews"] for r in body["results"]] == [37, 10]
    before = body["comparison"]
    assert (before["from"], before["to"]) == ((base - dt.timedelta(days=1)).isoformat(), base.isoformat())
    assert [(r["date"], r["pageviews"]) for r in before["results"]] == [
        ((base - dt.timedelta(days=1)).isoformat(), 0),
        (base.isoformat(), 36),
    ]


def test_an_event_filter_selects_the_visits_that_sent_it(client: TestClient, base: dt.date) -> None:
    # C1-C6 sent "signup" in their first visit of each day: 12 visits of three pages, 120 s each.
    row = get(client, "aggregate", event_name="signup", **rng(base))["results"][0]
    got = (row["visitors"], row["visits"], row["events"], row["bounce_rate"], row["visit_duration"])
    assert got == (6, 12, 12, 0.0, 120)
    assert row["views_per_visit"] == 3.0
