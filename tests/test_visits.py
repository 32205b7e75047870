"""Visits through the real gateway into the real engine: visitors landing on campaign links and
choosing on the first page (accept all, marketing refused, reject all), then browsing on.

Every visitor comes from one /24 with the same browser build (an office network): they must stay
different visitors. Exact numbers for visitors, visits, bounce, source and campaign breakdowns,
click attribution, entry pages and a funnel from the landing page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings
from consent_gateway.analytics import run_query
from consent_gateway.pseudonymize import SaltStore, pseudonymous_visitor
from consent_gateway.store import Store
from tests.gateway_support import flush

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
PROXY = ("127.0.0.1", 50000)


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><title>t</title></head><body>{request.url.path}</body></html>")


def _site() -> Starlette:
    return Starlette(routes=[Route("/", _page), Route("/{page:path}", _page)])


@dataclass(frozen=True)
class Visitor:
    ip: str
    landing: str
    choice: dict[str, Any] | None
    pages: tuple[str, ...]
    event_on: str | None = None


def _traffic() -> list[Visitor]:
    spring = "/?utm_campaign=spring&utm_source=google&utm_medium=cpc"
    newsletter = "/?utm_campaign=spring&utm_source=newsletter"
    accept = {"action": "accept_all"}
    no_marketing = {"action": "save", "categories": ["analytics"]}
    reject = {"action": "reject_all"}
    people = []
    # 4 accept all on the campaign landing page: / -> /portfolio (+ portfolio_view) -> /pricing
    for i in range(4):
        people.append(
            Visitor(f"203.0.113.{10 + i}", f"{spring}&gclid=A{i}", accept, ("/portfolio", "/pricing"), "/portfolio")
        )
    # 3 grant analytics but refuse marketing: / -> /portfolio (+ portfolio_view)
    for i in range(3):
        people.append(
            Visitor(f"203.0.113.{20 + i}", f"{spring}&gclid=M{i}", no_marketing, ("/portfolio",), "/portfolio")
        )
    # 2 reject all, from a newsletter campaign: / -> /about
    for i in range(2):
        people.append(Visitor(f"203.0.113.{30 + i}", newsletter, reject, ("/about",)))
    # 2 land on the campaign and leave without choosing: bounces
    for i in range(2):
        people.append(Visitor(f"203.0.113.{40 + i}", spring, None, ()))
    return people


@pytest.fixture
def gateway(make_settings: Callable[..., Settings]) -> ConsentGateway:
    return ConsentGateway(_site(), make_settings(k_anonymity=2, trusted_proxies=("127.0.0.1/32",)))


@pytest.fixture
def browsed(gateway: ConsentGateway) -> Iterator[tuple[ConsentGateway, TestClient]]:
    with TestClient(gateway, client=PROXY) as client:
        for person in _traffic():
            _browse(client, person)
        flush(client, gateway)
        yield gateway, client


def _browse(client: TestClient, person: Visitor) -> None:
    client.cookies.clear()
    headers = {"user-agent": CHROME, "x-forwarded-for": person.ip}
    assert client.get(person.landing, headers=headers).status_code == 200
    if person.choice is not None:
        response = client.post("/_consent/", json={**person.choice, "return_to": person.landing}, headers=headers)
        assert response.status_code == 200, response.text
    for page in person.pages:
        assert client.get(page, headers=headers).status_code == 200
        if page == person.event_on:
            sent = client.post(
                "/_consent/collect",
                json={"name": "portfolio_view", "url": f"http://testserver{page}"},
                headers=headers,
            )
            assert sent.status_code in (200, 202, 204), sent.text


def _run(gateway: ConsentGateway, store: Store, **params: str) -> dict[str, Any]:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    endpoint = params.pop("endpoint")
    items = {"site": "test-site", "from": today, "to": today, **params}
    return run_query(store, gateway.runtime.settings, endpoint, items).as_json()


def _rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["value"]: r for r in body["results"]}


def test_visits_follow_the_landing_page_through_the_choice(
    browsed: tuple[ConsentGateway, TestClient], store: Store
) -> None:
    gateway, _ = browsed
    top = _run(gateway, store, endpoint="aggregate")["results"][0]
    # 11 people in 11 visits: the landing hit before a choice and the pages after it are one visit.
    assert top["visitors"] == 11
    assert top["visits"] == 11
    assert top["pageviews"] == 4 * 3 + 3 * 2 + 2 * 2 + 2
    assert top["events"] == 4 + 3
    assert top["bounce_rate"] == round(2 / 11, 4)

    # The source follows the visit: every page and event of a google visit counts for google.
    sources = _rows(_run(gateway, store, endpoint="breakdown", dimension="utm_source"))
    assert {v: (r["visitors"], r["pageviews"], r["events"]) for v, r in sources.items()} == {
        "google": (9, 12 + 6 + 2, 7),
        "newsletter": (2, 4, 0),
    }
    # The campaign only for those who granted marketing, and then for their whole visit.
    campaigns = _rows(_run(gateway, store, endpoint="breakdown", dimension="utm_campaign"))
    assert {v: (r["visitors"], r["pageviews"], r["events"]) for v, r in campaigns.items()} == {"spring": (4, 12, 4)}
    clicks = _rows(_run(gateway, store, endpoint="breakdown", dimension="click_attribution"))
    assert {v: (r["visitors"], r["pageviews"]) for v, r in clicks.items()} == {"ad click": (4, 12)}
    # A filter on the campaign selects the whole visits it brought.
    filtered = _run(gateway, store, endpoint="aggregate", utm_campaign="spring")["results"][0]
    assert (filtered["visitors"], filtered["visits"], filtered["pageviews"], filtered["bounce_rate"]) == (4, 4, 12, 0.0)

    entries = _rows(_run(gateway, store, endpoint="breakdown", dimension="entry_page"))
    assert (entries["/"]["visits"], entries["/"]["visitors"], entries["/"]["bounce_rate"]) == (11, 11, round(2 / 11, 4))
    exits = _rows(_run(gateway, store, endpoint="breakdown", dimension="exit_page"))
    assert {v: r["visits"] for v, r in exits.items()} == {"/pricing": 4, "/portfolio": 3, "/about": 2, "/": 2}

    funnel = _run(gateway, store, endpoint="funnel", steps="page:/,page:/portfolio,event:portfolio_view")
    assert [r["visitors"] for r in funnel["results"]] == [11, 7, 7]


def test_a_link_is_written_only_for_a_choice_that_grants_analytics(
    browsed: tuple[ConsentGateway, TestClient], store: Store
) -> None:
    events = store.table("events")
    links = store.query_rows(
        f"SELECT identified, has(granted, 'marketing'), click_id, utm_campaign FROM {events} "
        "WHERE kind = 'link' ORDER BY click_id"
    )
    # 4 accept all (with their click ids), 3 analytics only (no click id); none for reject all.
    assert links == [(1, 0, "", "spring")] * 3 + [(1, 1, f"gclid:A{i}", "spring") for i in range(4)]
    # Nothing identifiable before the choice: every landing hit is stored pseudonymised, no click id.
    landing = store.query_rows(f"SELECT identified, click_id FROM {events} WHERE kind = 'visit' AND utm_source != ''")
    assert sorted(landing) == [(0, "")] * 11


def test_withdrawal_erases_the_link_and_leaves_the_landing_hit_anonymous(gateway: ConsentGateway, store: Store) -> None:
    with TestClient(gateway, client=PROXY) as client:
        person = _traffic()[0]
        _browse(client, person)
        flush(client, gateway)
        headers = {"user-agent": CHROME, "x-forwarded-for": person.ip}
        assert client.post("/_consent/withdraw", json={}, headers=headers).json()["erased"] is True
        flush(client, gateway)
    events = store.table("events")
    left = store.query_rows(f"SELECT kind, identified FROM {events} ORDER BY kind")
    # The landing hit stays, pseudonymised as it was stored; the link and every later hit are erased.
    assert left == [("visit", 0)]


def test_pseudonymous_keys_take_the_full_address(tmp_path: Any) -> None:
    salt = SaltStore(tmp_path / "salts").salt_for(dt.datetime.now(dt.UTC).date())
    office = [pseudonymous_visitor(salt, "s", f"198.51.100.{i}", CHROME) for i in range(18)]
    assert len(set(office)) == 18  # one /24, one browser build: 18 people stay 18
    # one person: the same key all day, however the address is spelled
    assert pseudonymous_visitor(salt, "s", "198.51.100.7", CHROME) == office[7]
    assert pseudonymous_visitor(salt, "s", "::ffff:198.51.100.7", CHROME) == office[7]
    assert pseudonymous_visitor(salt, "s", "2001:db8::1", CHROME) == pseudonymous_visitor(
        salt, "s", "2001:0db8:0:0::1", CHROME
    )


def test_visitors_behind_one_network_are_told_apart_but_each_is_one(gateway: ConsentGateway, store: Store) -> None:
    with TestClient(gateway, client=PROXY) as client:
        for ip in ("192.0.2.1", "192.0.2.2"):
            client.cookies.clear()
            headers = {"user-agent": CHROME, "x-forwarded-for": ip}
            for page in ("/", "/a", "/b"):
                assert client.get(page, headers=headers).status_code == 200
        flush(client, gateway)
    top = _run(gateway, store, endpoint="aggregate")["results"][0]
    assert (top["visitors"], top["visits"], top["pageviews"], top["bounce_rate"]) == (2, 2, 6, 0.0)


def test_a_link_reaches_only_the_visit_of_the_choice(make_settings: Callable[..., Settings], store: Store) -> None:
    """Stored rows with set times: a pseudonymised visit two hours before the choice stays apart."""
    from consent_gateway.store import migrate

    from . import analytics_data as data

    settings = make_settings(k_anonymity=1)
    migrate(store)
    noon = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    pseudonym, consented = 1111, 2222
    campaign = {"utm_source": "google", "utm_campaign": "spring"}
    rows = [
        # an earlier visit of the same daily key: 2 hours before the choice, not linked
        data._row(ts=noon - dt.timedelta(hours=2), identified=0, visitor=pseudonym, path="/old"),
        # the landing page view, pseudonymised, 10 seconds before the choice
        data._row(ts=noon - dt.timedelta(seconds=10), identified=0, visitor=pseudonym, **campaign),
        # the link written by the choice (all categories granted) ...
        data._row(
            ts=noon, kind="link", name="consent", identified=1, visitor=consented, granted=data.ALL,
            click_id="gclid:X1", props=f'{{"pseudonym":{pseudonym}}}', **campaign,
        ),
        # ... and the pages after it, consented
        data._row(ts=noon + dt.timedelta(seconds=20), visitor=consented, granted=data.ALL, path="/portfolio"),
        data._row(ts=noon + dt.timedelta(seconds=40), visitor=consented, granted=data.ALL, path="/pricing"),
    ]  # fmt: skip
    data.insert(store, "events", rows)
    day = noon.date().isoformat()

    def run(endpoint: str, **params: str) -> dict[str, Any]:
        return run_query(store, settings, endpoint, {"site": data.SITE, "from": day, "to": day, **params}).as_json()

    top = run("aggregate")["results"][0]
    # the old visit (1 page, a bounce) and the linked visit (3 pages): 2 visitor keys, 2 visits
    assert (top["visitors"], top["visits"], top["pageviews"], top["bounce_rate"]) == (2, 2, 4, 0.5)
    campaigns = _rows(run("breakdown", dimension="utm_campaign"))
    assert {v: (r["visitors"], r["pageviews"]) for v, r in campaigns.items()} == {"spring": (1, 3)}
    clicks = _rows(run("breakdown", dimension="click_attribution"))
    assert {v: (r["visitors"], r["pageviews"]) for v, r in clicks.items()} == {"ad click": (1, 3)}
    entries = _rows(run("breakdown", dimension="entry_page"))
    assert {v: r["visits"] for v, r in entries.items()} == {"/": 1, "/old": 1}
