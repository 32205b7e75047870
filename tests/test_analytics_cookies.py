"""``GET /api/v1/cookies``: the live cookie inventory through the analytics API, on the real embedded ClickHouse.

Inventory rows are written by the inventory's own flush path, from the observations the gateway makes.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from consent_gateway import Settings, create_analytics_app
from consent_gateway.analytics import TokenStore
from consent_gateway.inventory import Classifier, CookieInventory, flush_inventory, installed_catalogue
from consent_gateway.store import Store, migrate


def fill_inventory(store: Store, settings: Settings, site: str | None = None) -> None:
    """Observe a site that sets registered, catalogued and unknown cookies, and scripts that set their own.

    The rows are written as the gateway writes them: counted by ``CookieInventory``, then ``flush_inventory``.
    ``ui_lang`` is seen before it was registered (a classifier without the registry), to be classified again.
    """
    site = site or settings.site_id
    full = CookieInventory(Classifier.from_settings(settings, installed_catalogue()))
    full.observe_set_cookie("palette_session=s3cr3t; Path=/; HttpOnly", path="/login", granted=True, blocked=False)
    full.observe_set_cookie("_ga=GA1.1.99; Max-Age=63072000; Secure", path="/", granted=False, blocked=True)
    full.observe_set_cookie("_ga=GA1.1.98; Max-Age=63072000; Secure", path="/news", granted=True, blocked=False)
    full.observe_set_cookie("_ga=GA1.1.97; Max-Age=63072000; Secure", path="/news", granted=True, blocked=False)
    full.observe_set_cookie("mystery_pref=v; SameSite=None; Secure", path="/shop", granted=True, blocked=False)
    # Set by a script on the page: only ever seen coming back, once before any consent.
    full.observe_request_cookies(["tag_xid", "palette_session", "_ga"], path="/", granted=["necessary"])
    full.observe_request_cookies(["tag_xid", "=cmd"], path="/", granted=["necessary", "preferences"])
    flush_inventory(store, full, site)
    early = CookieInventory(Classifier((), unknown_category="preferences"))
    early.observe_set_cookie("ui_lang=en; Max-Age=31536000", path="/", granted=True, blocked=False)
    flush_inventory(store, early, site)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], store: Store) -> Settings:
    settings = make_settings()
    migrate(store)
    fill_inventory(store, settings)
    return settings


@pytest.fixture
def client(settings: Settings, store: Store) -> Iterator[TestClient]:
    token, _ = TokenStore(settings.tokens_path).create("site-team")
    with TestClient(create_analytics_app(settings, store=store)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def test_the_inventory_of_the_tokens_site(client: TestClient) -> None:
    response = client.get("/api/v1/cookies")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    by = {c["name"]: c for c in body["results"]}
    assert set(by) == {"palette_session", "_ga", "mystery_pref", "tag_xid", "=cmd", "ui_lang"}
    # Unclassified names come first: they are what the site has to act on.
    assert [c["name"] for c in body["results"][:3]] == ["=cmd", "mystery_pref", "tag_xid"]
    assert body["unclassified"] == 3 and body["overflow"] == 0
    ga = by["_ga"]
    assert (ga["category"], ga["source"], ga["set_by"]) == ("analytics", "catalogue", "server")
    assert (ga["set_count"], ga["request_count"], ga["blocked"], ga["before_consent"]) == (3, 1, 1, 2)
    assert (ga["lifetime_seconds"], ga["secure"], ga["http_only"]) == (63072000, True, False)
    assert ga["top_paths"] == [{"path": "/news", "count": 2}, {"path": "/", "count": 1}]
    session = by["palette_session"]
    assert (session["category"], session["source"], session["http_only"]) == ("necessary", "registry", True)
    assert session["before_consent"] == 0 and session["top_paths"] == [{"path": "/login", "count": 1}]
    tag = by["tag_xid"]
    assert (tag["source"], tag["set_by"], tag["request_count"], tag["before_consent"]) == (
        "unclassified",
        "script",
        2,
        1,
    )
    # Registered since it was seen: classified against today's registry, not the one it was stored with.
    assert (by["ui_lang"]["category"], by["ui_lang"]["source"]) == ("preferences", "registry")
    assert body["query"] == {"site": "test-site", "days": 90, "unclassified": False}
    # Site facts, not people: no k, no suppression, and never a value.
    assert "k" not in body and "suppressed" not in body
    assert "s3cr3t" not in response.text and "GA1.1" not in response.text


def test_only_the_unclassified(client: TestClient) -> None:
    body = client.get("/api/v1/cookies", params={"unclassified": "1"}).json()
    assert [c["name"] for c in body["results"]] == ["=cmd", "mystery_pref", "tag_xid"]
    assert body["unclassified"] == 3


def test_csv_is_safe_to_open_in_a_spreadsheet(client: TestClient) -> None:
    response = client.get("/api/v1/cookies", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="cookies-test-site-90d.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    by = {r["name"]: r for r in rows}
    # A name anyone can send that starts like a formula is quoted so a spreadsheet shows it as text.
    assert "'=cmd" in by and "=cmd" not in by
    assert by["_ga"]["top_paths"] == "/news=2 /=1"
    assert (by["_ga"]["before_consent"], by["_ga"]["blocked"], by["_ga"]["set_by"]) == ("2", "1", "server")
    assert len(rows) == 6


def test_another_site_is_read_as_stored_and_only_with_its_token(
    client: TestClient, settings: Settings, store: Store
) -> None:
    fill_inventory(store, settings, site="shop")
    refused = client.get("/api/v1/cookies", params={"site": "shop"})
    assert refused.status_code == 403 and refused.json()["field"] == "site"
    token, _ = TokenStore(settings.tokens_path).create("shop-team", sites=["shop"])
    body = client.get("/api/v1/cookies", params={"site": "shop"}, headers={"Authorization": f"Bearer {token}"}).json()
    by = {c["name"]: c for c in body["results"]}
    # This gateway knows only its own site's registry: another site keeps the sources stored with its rows.
    assert (by["ui_lang"]["category"], by["ui_lang"]["source"]) == ("preferences", "unclassified")
    assert body["unclassified"] == 4


def test_a_shared_link_may_not_read_the_inventory(client: TestClient, settings: Settings) -> None:
    share, _ = TokenStore(settings.tokens_path).create_share(settings.site_id)
    response = client.get("/api/v1/cookies", headers={"Authorization": f"Bearer {share}"})
    assert response.status_code == 403
    assert "shared link" in response.json()["error"]
    # The same link still reads the dashboard's figures.
    assert client.get("/api/v1/realtime", headers={"Authorization": f"Bearer {share}"}).status_code == 200


def test_no_token_no_inventory(client: TestClient) -> None:
    response = client.get("/api/v1/cookies", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"days": "0"}, "days"),
        ({"days": "abc"}, "days"),
        ({"days": "3661"}, "days"),
        ({"unclassified": "maybe"}, "unclassified"),
        ({"format": "xml"}, "format"),
        ({"site": "no site"}, "site"),
        ({"period": "30d"}, "period"),
    ],
)
def test_bad_parameters_get_400_naming_them(client: TestClient, params: dict[str, str], field: str) -> None:
    response = client.get("/api/v1/cookies", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert field in response.json()["error"]


def test_a_repeated_parameter_is_refused(client: TestClient) -> None:
    response = client.get("/api/v1/cookies?days=7&days=30")
    assert response.status_code == 400 and response.json()["field"] == "days"


def test_the_call_is_logged_by_token_name_and_parameter_names(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="consent_gateway.analytics"):
        client.get("/api/v1/cookies", params={"days": "30"})
    lines = [r.getMessage() for r in caplog.records if "analytics cookies" in r.getMessage()]
    assert lines == ["analytics cookies token=site-team status=200 params=days"]
    assert "cga_" not in caplog.text
