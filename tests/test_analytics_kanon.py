# ruff: noqa: F811 - the fixtures of test_analytics_api are imported by name and used as arguments.
"""The k-anonymity attacks of the audit, each on the real embedded engine, and token site scoping.

The data set is tests/analytics_data.py (k = 5); each test adds the few rows its attack needs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from consent_gateway import Settings, SettingsError, create_analytics_app
from consent_gateway.analytics import TokenStore
from consent_gateway.analytics.params import Query
from consent_gateway.analytics.queries import Analytics
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import ReceiptRecord
from consent_gateway.rows import RowBuilder
from consent_gateway.store import RECEIPT_COLUMNS, Store

from . import analytics_data as data
from .test_analytics_api import base, client, get, loaded, rng, token  # noqa: F401 - fixtures

Loaded = tuple[Settings, Store, list[dict[str, Any]]]
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


def _at(base: dt.date, day: int, seconds: int) -> dt.datetime:
    return dt.datetime.combine(base + dt.timedelta(days=day), dt.time(14), dt.UTC) + dt.timedelta(seconds=seconds)


@pytest.fixture
def lone(loaded: Loaded, base: dt.date) -> list[dict[str, Any]]:
    """One person: six page views of a password-reset path, from a referrer and an OS no one else has."""
    rows = [
        data._row(
            ts=_at(base, 1, i * 30),
            identified=1,
            visitor=60_001,
            granted=data.ALL,
            path="/reset/PWRESETTOKEN9f8e7d",
            referrer_host="leak.example",
            os="Haiku",
            device="desktop",
            browser="WebPositive",
        )
        for i in range(6)
    ]
    data.insert(loaded[1], "events", rows)
    return rows


def test_a_filter_under_k_answers_with_the_suppression_alone(
    client: TestClient, lone: list[dict[str, Any]], base: dt.date
) -> None:
    # The audit: the filtered aggregate was suppressed, but a breakdown under the same filter gave
    # the hidden person back as "other (suppressed)" with visitors 1, pageviews 6; chained filters
    # then confirmed each of their attributes.
    aggregate = get(client, "aggregate", referrer_host="leak.example", **rng(base))
    assert aggregate["suppressed"] is True and set(aggregate["results"][0].values()) == {None}
    for dimension in ("os", "device", "browser", "page", "entry_page", "referrer_host", "utm_source"):
        body = get(client, "breakdown", dimension=dimension, referrer_host="leak.example", **rng(base))
        assert body["results"] == [] and body["suppressed"] is True, dimension
        assert "fewer than k = 5 people" in body["notes"]["suppressed"]
    for chained in ({"os": "Haiku"}, {"os": "Haiku", "device": "desktop"}, {"browser": "WebPositive"}):
        body = get(client, "breakdown", dimension="page", referrer_host="leak.example", **chained, **rng(base))
        assert body["results"] == [] and body["suppressed"] is True
    series = get(client, "timeseries", referrer_host="leak.example", **rng(base))
    assert series["results"] == [] and series["suppressed"] is True
    funnel = get(client, "funnel", steps="page:/reset/PWRESETTOKEN9f8e7d,page:/", os="Haiku", **rng(base))
    assert funnel["results"] == [] and funnel["suppressed"] is True
    # The same filter over the whole population (k or more people) still answers.
    assert get(client, "aggregate", device="desktop", **rng(base))["suppressed"] is False


def test_one_person_is_never_listed_unfiltered(client: TestClient, lone: list[dict[str, Any]], base: dt.date) -> None:
    for dimension, value in (("page", "/reset/PWRESETTOKEN9f8e7d"), ("referrer_host", "leak.example"), ("os", "Haiku")):
        body = get(client, "breakdown", dimension=dimension, limit=100, **rng(base))
        text = json.dumps(body["results"])
        assert value not in text, dimension
        if dimension != "page":
            # Alone under k in its dimension: folding it would be showing it.
            assert "other (suppressed)" not in text and body["suppressed_groups"] == 1
    entry = get(client, "breakdown", dimension="entry_page", limit=100, **rng(base))
    assert "/reset/" not in json.dumps(entry["results"]) and entry["other_shown"] is False


def test_the_rollup_holds_the_lone_page_but_the_api_never_reads_it(
    client: TestClient, loaded: Loaded, lone: list[dict[str, Any]], base: dt.date
) -> None:
    store = loaded[1]
    hits = store.query_rows(
        f"SELECT sum(hits) FROM {store.table('events_daily')} WHERE path = {{p:String}}",
        {"p": "/reset/PWRESETTOKEN9f8e7d"},
    )[0][0]
    assert hits == 6  # six hits: k = 5 on hits would list one person's page
    for endpoint, extra in (("breakdown", {"dimension": "page"}), ("breakdown", {"dimension": "referrer_host"})):
        response = client.get(f"/api/v1/{endpoint}", params={"source": "rollup", **extra, **rng(base)})
        assert response.status_code == 400 and "PWRESET" not in response.text


def test_other_needs_two_groups_and_k_people_counted_once(client: TestClient, loaded: Loaded, base: dt.date) -> None:
    # Six people: 1-4 view /x, 3-6 view /y. Each page holds 4 people (under k); together 6, not 8.
    extra = [
        data._row(ts=_at(base, 0, p * 60 + j), identified=1, visitor=70_000 + p, granted=data.ALL, path=path)
        for p in range(1, 7)
        for j, path in enumerate(("/x", "/y"))
        if (path == "/x" and p <= 4) or (path == "/y" and p >= 3)
    ]
    data.insert(loaded[1], "events", extra)
    body = get(client, "breakdown", dimension="page", limit=100, **rng(base))
    rows = {r["value"]: r for r in body["results"]}
    assert "/x" not in rows and "/y" not in rows
    # Folded: /x, /y, /secret (C13, C14) and /blog (C1): 6 + 2 + 1 = 9 people, each counted once,
    # and 4 + 4 + 2 + 1 page views.
    assert rows["other (suppressed)"] == {"value": "other (suppressed)", "visitors": 9, "pageviews": 11, "events": 0}
    assert body["suppressed_groups"] == 4 and body["other_shown"] is True
    _, _, other = data.expected_breakdown([*loaded[2], *extra], "page")
    assert other == {"visitors": 9, "pageviews": 11, "events": 0}
    # Entry pages: /x (people 1-4), /y (5, 6) and /blog (C1's second visit) fold to 7 people and
    # 7 visits; people 3 and 4 viewed two pages, so 5 of the 7 visits bounced.
    entry = get(client, "breakdown", dimension="entry_page", limit=100, **rng(base))
    rows = {r["value"]: r for r in entry["results"]}
    assert rows["other (suppressed)"] == {
        "value": "other (suppressed)",
        "visitors": 7,
        "visits": 7,
        "bounce_rate": round(5 / 7, 4),
    }
    assert entry["suppressed_groups"] == 3 and "/x" not in rows


def _receipt_rows(settings: Settings, base: dt.date, day: int, n: int, user_agent: str, prefix: str) -> list[bytes]:
    builder = RowBuilder(settings, SaltStore(settings.keys_dir))
    when = dt.datetime.combine(base + dt.timedelta(days=day), dt.time(11), dt.UTC).timestamp()
    return [
        builder.receipt_line(
            ReceiptRecord(
                ts=when + i,
                site=data.SITE,
                consent_id=f"{prefix}{i}",
                version="1.0",
                categories=("necessary", "analytics"),
                method="custom",
                banner_hash="h",
                locale="ko",
                ip="198.51.100.7",
                user_agent=user_agent,
            )
        )
        for i in range(n)
    ]


def _insert_receipts(store: Store, lines: list[bytes]) -> None:
    store.insert_lines("consent_receipts", lines, [n for n, _ in RECEIPT_COLUMNS])


def test_consent_rates_leave_bots_out(client: TestClient, loaded: Loaded, base: dt.date) -> None:
    settings, store = loaded[0], loaded[1]
    # Seven headless-browser choices on day 2, stored the way the gateway stores them.
    _insert_receipts(store, _receipt_rows(settings, base, 2, 7, HEADLESS, "bot"))
    assert store.query_rows(f"SELECT count() FROM {store.table('consent_receipts')} WHERE device = 'bot'")[0][0] == 7
    day2 = get(client, "consent-rates", **rng(base))["results"][2]
    assert day2["visitors"] == 0
    _insert_receipts(store, _receipt_rows(settings, base, 2, 6, DESKTOP, "person"))
    day2 = get(client, "consent-rates", **rng(base))["results"][2]
    assert day2["visitors"] == 6 and day2["analytics"] == 1.0


def test_consent_total_never_gives_back_suppressed_days(client: TestClient, loaded: Loaded, base: dt.date) -> None:
    day1 = {"from": (base + dt.timedelta(days=1)).isoformat(), "to": (base + dt.timedelta(days=2)).isoformat()}
    # Only day 1's three choices: the whole answer is the suppression.
    body = get(client, "consent-rates", **day1)
    assert body["results"] == [] and body["suppressed"] is True and body["total"]["choices"] is None
    # Days 1 and 2 with three choices each: every day suppressed, but the six together are k people
    # and the total is the sum of two suppressed days, so it may be shown.
    _insert_receipts(loaded[1], _receipt_rows(loaded[0], base, 2, 3, DESKTOP, "late"))
    body = get(client, "consent-rates", **day1)
    assert [r["suppressed"] for r in body["results"]] == [True, True]
    assert body["total"]["choices"] == 6 and body["total"]["analytics"] == 1.0


def test_hourly_buckets_stop_at_now(loaded: Loaded, base: dt.date) -> None:
    settings, store, _ = loaded
    today = base + dt.timedelta(days=2)
    query = Query.from_items(
        "timeseries",
        [("interval", "hour"), ("from", base.isoformat()), ("to", today.isoformat())],
        default_site=settings.site_id,
        today=today,
    )
    now = dt.datetime.combine(today, dt.time(9, 30), dt.UTC)
    rows = Analytics(store, settings).run(query, today=today, now=now).rows
    assert len(rows) == 2 * 24 + 10 and rows[-1]["date"] == f"{today.isoformat()}T09:00:00Z"
    days = Query.from_items(
        "timeseries",
        [("from", base.isoformat()), ("to", (today + dt.timedelta(days=3)).isoformat())],
        default_site=settings.site_id,
    )
    assert [r["date"] for r in Analytics(store, settings).run(days, today=today, now=now).rows][-1] == today.isoformat()


# -- tokens read only their sites ------------------------------------------------------------------


@pytest.fixture
def app_client(loaded: Loaded) -> Iterator[TestClient]:
    with TestClient(create_analytics_app(loaded[0], store=loaded[1])) as c:
        yield c


def _status(c: TestClient, token: str, site: str, base: dt.date) -> int:
    response = c.get(
        "/api/v1/aggregate", params={"site": site, **rng(base)}, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


def test_a_token_reads_only_its_sites(app_client: TestClient, loaded: Loaded, base: dt.date) -> None:
    tokens = TokenStore(loaded[0].tokens_path)
    default, _ = tokens.create("configured-site")
    other, record = tokens.create("other-only", sites=["other-site"])
    both, _ = tokens.create("both", sites=["test-site", "other-site", "test-site"])
    assert record.sites == ("other-site",) and "other-site" in repr(record)
    assert _status(app_client, default, "test-site", base) == 200
    refused = app_client.get(
        "/api/v1/breakdown",
        params={"site": "other-site", "dimension": "page", **rng(base)},
        headers={"Authorization": f"Bearer {default}"},
    )
    assert refused.status_code == 403 and refused.json()["field"] == "site"
    assert "may not read site 'other-site'" in refused.json()["error"] and "results" not in refused.json()
    assert _status(app_client, other, "test-site", base) == 403
    assert _status(app_client, other, "other-site", base) == 200
    assert _status(app_client, both, "test-site", base) == 200 == _status(app_client, both, "other-site", base)
    with pytest.raises(SettingsError, match="--site"):
        tokens.create("bad", sites=["no spaces allowed"])


def test_tokens_written_before_sites_read_the_configured_site_only(
    app_client: TestClient, loaded: Loaded, base: dt.date
) -> None:
    tokens = TokenStore(loaded[0].tokens_path)
    token, _ = tokens.create("legacy")
    # Rewrite the file as older versions wrote it: no "sites" key at all.
    stored = json.loads(loaded[0].tokens_path.read_text("utf-8"))
    stored["tokens"][0].pop("sites", None)
    loaded[0].tokens_path.write_text(json.dumps(stored), "utf-8")
    assert tokens.records()[0].sites is None
    assert _status(app_client, token, "test-site", base) == 200
    assert _status(app_client, token, "other-site", base) == 403
    # Writing the file again (another token) keeps the old record as it was.
    tokens.create("newer", sites=["other-site"])
    again = json.loads(loaded[0].tokens_path.read_text("utf-8"))["tokens"]
    assert "sites" not in again[0] and again[1]["sites"] == ["other-site"]
    tokens.revoke("legacy")
    assert _status(app_client, token, "test-site", base) == 401


# -- the rules as a property over many filter sets -------------------------------------------------

FILTER_VALUES = {
    "browser": ["Chrome", "Firefox", "Safari", "RareBrowser", "WebPositive"],
    "os": ["Android", "Windows", "iOS", "Haiku"],
    "device": ["mobile", "desktop", "tablet"],
    "referrer_host": ["search.example", "leak.example"],
    "utm_source": ["newsletter"],
    "page": ["/", "/pricing", "/secret", "/reset/PWRESETTOKEN9f8e7d"],
}
COLUMN = {"page": "path"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    filters=st.dictionaries(st.sampled_from(sorted(FILTER_VALUES)), st.integers(0, 4), max_size=2),
    dimension=st.sampled_from(["browser", "os", "device", "referrer_host", "page", "utm_source"]),
)
@example(filters={"referrer_host": 1}, dimension="os")  # one person: the suppression alone
@example(filters={"browser": 3}, dimension="page")  # two people
@example(filters={}, dimension="page")  # small pages, no "other" row
@example(filters={"device": 1}, dimension="browser")
def test_no_answer_ever_shows_fewer_than_k_people(
    client: TestClient,
    loaded: Loaded,
    lone: list[dict[str, Any]],
    base: dt.date,
    filters: dict[str, int],
    dimension: str,
) -> None:
    chosen = {d: FILTER_VALUES[d][i % len(FILTER_VALUES[d])] for d, i in filters.items()}
    # Filters select by the visit's source and campaign (its entry's), as the queries do.
    visits = data.with_visit_attribution([*loaded[2], *lone])
    rows = [r for r in visits if all(r[COLUMN.get(d, d)] == v for d, v in chosen.items())]
    human = [r for r in rows if not r["is_bot"]]
    _, population = data.visitor_count(human)
    body = get(client, "breakdown", dimension=dimension, limit=100, **chosen, **rng(base))
    aggregate = get(client, "aggregate", **chosen, **rng(base))
    if 0 < population < 5:
        assert body["results"] == [] and body["suppressed"] is True
        assert aggregate["suppressed"] is True and set(aggregate["results"][0].values()) == {None}
        return
    shown, hidden, other = data.expected_breakdown(rows, dimension)
    got = {r["value"]: {k: r[k] for k in ("visitors", "pageviews", "events")} for r in body["results"]}
    assert got.pop("other (suppressed)", None) == other
    assert got == shown and body["suppressed_groups"] == hidden
    assert aggregate["suppressed"] is False
