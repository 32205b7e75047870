"""The consent routes: state, choices by JSON and by plain form, GPC, origin checks, withdraw, receipts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from html import unescape

import pytest
from starlette.testclient import TestClient

from consent_gateway import ConsentGateway, Settings
from consent_gateway.signing import ConsentCodec
from consent_gateway.store import Store
from tests.conftest import SECRET
from tests.gateway_support import client_for, flush, set_cookie_map, sign_cookie, site_app

YEAR = 365 * 86400


def _cookie_record(response_cookie_header: str) -> tuple[str, tuple[str, ...], str]:
    """(consent id, categories, method) of a Set-Cookie header for cg_consent."""
    value = response_cookie_header.split(";", 1)[0].split("=", 1)[1]
    verified = ConsentCodec([SECRET], max_age=YEAR, site_id="test-site").decode(value)
    assert verified is not None, "the gateway issued a cookie that does not verify"
    return verified.record.consent_id, verified.record.categories, verified.record.method


def _attr(tag: str, name: str) -> str:
    """One attribute of an HTML tag, unescaped."""
    found = re.search(rf'\s{name}="([^"]*)"', tag)
    assert found is not None, f"{name} missing in {tag}"
    return unescape(found.group(1))


def _gateway(make_settings: Callable[..., Settings], **overrides: object) -> ConsentGateway:
    return ConsentGateway(site_app(), make_settings(**overrides))


# -- state and JSON choices -------------------------------------------------------------------------


def test_state_describes_categories_in_both_languages(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.get("/_consent/state")
    assert response.status_code == 200
    state = response.json()
    assert state["status"] == "unset" and state["categories"] == ["necessary"]
    assert state["policy"]["version"] == "1.0"
    info = {c["key"]: c for c in state["categories_info"]}
    assert list(info) == ["necessary", "preferences", "analytics", "marketing"]
    assert info["necessary"]["required"] and info["necessary"]["granted"]
    assert info["marketing"]["name"] == {"ko": "마케팅 및 광고", "en": "Marketing and advertising"}
    assert "_mk_*" in info["marketing"]["cookies"]
    assert state["texts"]["en"]["accept"] == "Accept all" and state["texts"]["ko"]["accept"] == "모두 허용"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "categories", "method"),
    [
        ({"action": "accept_all"}, ("necessary", "preferences", "analytics", "marketing"), "accept_all"),
        ({"action": "reject_all"}, ("necessary",), "reject_all"),
        ({"action": "save", "categories": ["analytics"]}, ("necessary", "analytics"), "custom"),
        ({"action": "save", "categories": []}, ("necessary",), "custom"),
    ],
)
def test_json_choice_sets_a_signed_cookie(
    make_settings: Callable[..., Settings], body: dict, categories: tuple[str, ...], method: str
) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", json=body)
        assert response.status_code == 200
        assert response.json()["categories"] == list(categories)
        header = set_cookie_map(response)["cg_consent"]
        assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
        _, cats, got_method = _cookie_record(header)
        assert (cats, got_method) == (categories, method)
        seen = client.get("/consent").json()  # the jar now sends the cookie
        assert seen["status"] == "given" and seen["categories"] == sorted(categories)


@pytest.mark.parametrize("return_to", [True, 7, ["/"], {"p": "/"}])
def test_a_return_to_that_is_no_text_is_ignored(make_settings: Callable[..., Settings], return_to: object) -> None:
    """A JSON choice with a non-string return_to is still a choice (it once answered 500)."""
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", json={"action": "accept_all", "return_to": return_to})
    assert response.status_code == 200 and response.json()["status"] == "given"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"action": "maybe"}, 400, "action must be"),
        ({"action": "save", "categories": ["spying"]}, 400, "unknown category"),
        ({"action": "save", "categories": "analytics,marketing"}, 400, "unknown category"),
        ({"action": "save", "categories": [1, 2]}, 400, "list of category keys"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_choices_get_a_message(
    make_settings: Callable[..., Settings], body: object, status: int, words: str
) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert "set-cookie" not in response.headers


def test_choice_refuses_other_content_types(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", content=b"<x/>", headers={"content-type": "application/xml"})
        assert response.status_code == 415 and "application/json" in response.json()["error"]
        response = client.post("/_consent/", content=b"{nope", headers={"content-type": "application/json"})
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_unknown_route_and_method(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        assert client.get("/_consent/nope").status_code == 404
        assert client.delete("/_consent/state").status_code == 405
        assert client.get("/_consent/static/../settings.py").status_code == 404
        js = client.get("/_consent/static/banner.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert client.get("/_consent/healthz").json()["writer"] is True


# -- GPC --------------------------------------------------------------------------------------------


def test_gpc_removes_marketing_from_an_accept_all_visitor(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        seen = client.get("/consent", headers={"Sec-GPC": "1"}).json()
        assert seen["gpc"] is True
        assert "marketing" not in seen["categories"] and "analytics" in seen["categories"]
        assert client.get("/consent").json()["categories"] == ["analytics", "marketing", "necessary", "preferences"]


def test_choice_under_gpc_records_method_gpc(make_settings: Callable[..., Settings], store: Store) -> None:
    gateway = _gateway(make_settings)
    with client_for(gateway) as client:
        response = client.post("/_consent/", json={"action": "accept_all"}, headers={"Sec-GPC": "1"})
        assert response.json()["method"] == "gpc"
        assert "marketing" not in response.json()["categories"]
        consent_id, cats, method = _cookie_record(set_cookie_map(response)["cg_consent"])
        assert method == "gpc" and "marketing" not in cats and "analytics" in cats
        state = client.get("/_consent/state", headers={"Sec-GPC": "1"}).json()
        assert state["gpc"] is True and state["method"] == "gpc"
        marketing = next(c for c in state["categories_info"] if c["key"] == "marketing")
        assert marketing["refused_by_gpc"] is True and marketing["granted"] is False
        banner = client.get("/_consent/", headers={"Sec-GPC": "1"}).text
        assert "cg-gpc" in banner
    rows = store.query_rows(
        f"SELECT method, categories FROM {store.table('consent_receipts')} WHERE consent_id = {{c:String}}",
        {"c": consent_id},
    )
    assert rows == [("gpc", ["necessary", "preferences", "analytics"])]


# -- the form flow without JavaScript ---------------------------------------------------------------


def test_form_reject_all_redirects_back_with_the_cookie(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", data={"action": "reject_all", "return_to": "/students"})
        assert response.status_code == 303
        assert response.headers["location"] == "/students"
        _, cats, method = _cookie_record(set_cookie_map(response)["cg_consent"])
        assert (cats, method) == (("necessary",), "reject_all")
        assert client.get("/consent").json()["status"] == "given"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "http://testserver.evil.com/",
        "javascript:alert(1)",
        "/a\r\nX: y",
    ],
)
def test_form_redirect_stays_on_site(make_settings: Callable[..., Settings], target: str) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", data={"action": "reject_all", "return_to": target})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith("//")
    assert "evil" not in location


def test_form_without_return_to_goes_back_to_the_referring_page(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post(
            "/_consent/", data={"action": "accept_all"}, headers={"Referer": "http://testserver/students?page=2"}
        )
    assert response.headers["location"] == "/students?page=2"


def test_form_save_with_chosen_categories(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", data={"action": "save", "categories": ["analytics"], "return_to": "/"})
        assert response.status_code == 303
        _, cats, method = _cookie_record(set_cookie_map(response)["cg_consent"])
        assert (cats, method) == (("necessary", "analytics"), "custom")
        page = client.get("/")
        assert set(set_cookie_map(page)) == {"palette_session", "_pa_id"}


def test_injected_banner_form_round_trip(make_settings: Callable[..., Settings]) -> None:
    """What a browser without JavaScript does: read the form in the page, submit a button, follow."""
    with client_for(_gateway(make_settings)) as client:
        page = client.get("/students?tab=all").text
        form = re.search(r'<form[^>]*method="post"[^>]*action="(/_consent/)"[^>]*>(.*?)</form>', page, re.S)
        assert form is not None
        hidden = [t for t in re.findall(r"<input[^>]*>", form.group(2)) if 'type="hidden"' in t]
        fields = {_attr(t, "name"): _attr(t, "value") for t in hidden}
        assert fields["return_to"] == "/students?tab=all"
        assert re.search(r'<button[^>]*name="action"[^>]*value="accept_all"', form.group(2))
        response = client.post(form.group(1), data={**fields, "action": "accept_all"})
        assert response.status_code == 303 and response.headers["location"] == "/students?tab=all"
        after = client.get(response.headers["location"])
        assert 'id="cg-banner"' not in after.text
        assert set(set_cookie_map(after)) == {"palette_session", "ui_lang", "_pa_id", "_mk_pixel", "_mk_campaign"}


def test_settings_page_works_without_javascript(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET, categories=["necessary", "analytics"]))
        page = client.get("/_consent/?return_to=/students", headers={"Accept-Language": "en"}).text
    assert '<html lang="en">' in page
    boxes = {_attr(tag, "value"): tag for tag in re.findall(r'<input[^>]*name="categories"[^>]*>', page)}
    assert set(boxes) == {"necessary", "preferences", "analytics", "marketing"}
    assert " checked" in boxes["analytics"] and " checked" not in boxes["marketing"]
    assert " disabled" in boxes["necessary"]  # required: shown, not switchable
    assert 'action="/_consent/withdraw"' in page


# -- origin checks ----------------------------------------------------------------------------------

POSTS = [
    ("/_consent/", {"json": {"action": "accept_all"}}),
    ("/_consent/withdraw", {"json": {}}),
    ("/_consent/collect", {"json": {"name": "pageview"}}),
]
FOREIGN = [
    {"Origin": "https://evil.com"},
    {"Origin": "null"},
    {"Origin": "http://testserver.evil.com"},
    {"Referer": "https://evil.com/page"},
    {"Origin": "https://evil.com", "Referer": "http://testserver/"},
]


@pytest.mark.parametrize(("path", "kwargs"), POSTS, ids=["choose", "withdraw", "collect"])
@pytest.mark.parametrize("headers", FOREIGN, ids=["origin", "null", "lookalike", "referer", "origin-wins"])
def test_cross_origin_posts_are_refused(
    make_settings: Callable[..., Settings], path: str, kwargs: dict, headers: dict[str, str]
) -> None:
    with client_for(_gateway(make_settings)) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(("path", "kwargs"), POSTS, ids=["choose", "withdraw", "collect"])
def test_same_origin_posts_are_accepted(make_settings: Callable[..., Settings], path: str, kwargs: dict) -> None:
    with client_for(_gateway(make_settings)) as client:
        for headers in ({"Origin": "http://testserver"}, {"Referer": "http://testserver/students"}, {}):
            response = client.post(path, headers=headers, **kwargs)
            assert response.status_code in (200, 202), response.text


def test_allowed_origins_are_accepted(make_settings: Callable[..., Settings]) -> None:
    gateway = _gateway(make_settings, allowed_origins=("https://www.example.com",))
    with client_for(gateway) as client:
        ok = client.post("/_consent/", json={"action": "reject_all"}, headers={"Origin": "https://www.example.com"})
        refused = client.post("/_consent/", json={"action": "reject_all"}, headers={"Origin": "https://example.com"})
    assert ok.status_code == 200 and refused.status_code == 403


# -- withdraw and receipts --------------------------------------------------------------------------


def _choose(client: TestClient, body: dict) -> str:
    response = client.post("/_consent/", json=body)
    assert response.status_code == 200
    time.sleep(0.01)  # receipts are ordered by their millisecond timestamps
    return str(response.json()["receipt"]["consent_id"])


def test_receipts_list_a_visitors_choices_in_order(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        assert client.get("/_consent/receipts").json() == {"consent_id": None, "receipts": []}
        first = _choose(client, {"action": "accept_all"})
        assert _choose(client, {"action": "save", "categories": ["analytics"]}) == first  # same visitor, same id
        assert _choose(client, {"action": "reject_all", "locale": "en"}) == first
        body = client.get("/_consent/receipts").json()
        with TestClient(client.app, base_url="http://testserver") as other:
            assert other.get("/_consent/receipts").json()["receipts"] == []  # no cookie, no receipts
    assert body["consent_id"] == first
    receipts = body["receipts"]
    assert [r["method"] for r in receipts] == ["accept_all", "custom", "reject_all"]
    assert [r["categories"] for r in receipts] == [
        ["necessary", "preferences", "analytics", "marketing"],
        ["necessary", "analytics"],
        ["necessary"],
    ]
    assert [r["locale"] for r in receipts] == ["ko", "ko", "en"]
    assert all(r["version"] == "1.0" and len(r["banner_hash"]) == 16 for r in receipts)
    assert receipts[0]["banner_hash"] != receipts[2]["banner_hash"]  # a different text was shown
    assert [r["ts"] for r in receipts] == sorted(r["ts"] for r in receipts)


def test_withdraw_erases_identifiable_rows_and_deletes_cookies(
    make_settings: Callable[..., Settings], store: Store
) -> None:
    gateway = _gateway(make_settings)
    events = f"{store.table('events')}"
    with client_for(gateway) as client, client_for(gateway) as other, client_for(gateway) as anonymous:
        consent_id = _choose(client, {"action": "accept_all"})
        other_id = _choose(other, {"action": "accept_all"})
        for path in ("/", "/students", "/json"):
            client.get(path)
            other.get(path)
            anonymous.get(path)
        client.post("/_consent/collect", json=[{"name": "pageview"}, {"name": "signup", "url": "/?gclid=abc"}])
        flush(client, gateway)
        rows = gateway.runtime.rows

        def identified(cid: str) -> int:
            return int(
                store.query_rows(
                    f"SELECT count() FROM {events} WHERE identified = 1 AND visitor = {{v:UInt64}}",
                    {"v": rows.visitor_of(cid)},
                )[0][0]
            )

        pseudonymous_before = store.query_rows(f"SELECT count() FROM {events} WHERE identified = 0")[0][0]
        # Each choice granted analytics, so each wrote one identified link row besides its hits.
        assert identified(consent_id) == 5 + 1 and identified(other_id) == 3 + 1 and pseudonymous_before == 3

        # The browser holds cookies of every category, one of them HttpOnly (_pa_id).
        for name in ("_pa_id", "ui_lang", "_mk_pixel", "palette_session"):
            client.cookies.set(name, "x")
        response = client.post("/_consent/withdraw", json={})
        assert response.status_code == 200
        assert response.json()["erased"] is True
        assert response.json()["receipt"]["method"] == "withdraw"
        deleted = set_cookie_map(response)
        # Every non-necessary cookie the browser sent (some came from the pages above), none other.
        assert {"cg_consent", "_pa_id", "ui_lang", "_mk_pixel", "_mk_campaign"} == set(deleted)
        assert all("Max-Age=0" in header for header in deleted.values())

        assert identified(consent_id) == 0
        assert identified(other_id) == 3 + 1
        assert store.query_rows(f"SELECT count() FROM {events} WHERE identified = 0")[0][0] == pseudonymous_before

        # Back to no consent; later visits are pseudonymous only.
        client.cookies.delete("cg_consent")
        assert client.get("/consent").json()["status"] == "unset"
        flush(client, gateway)
        assert identified(consent_id) == 0

    methods = store.query_rows(
        f"SELECT method FROM {store.table('consent_receipts')} WHERE consent_id = {{c:String}} ORDER BY ts",
        {"c": consent_id},
    )
    assert [m for (m,) in methods] == ["accept_all", "withdraw"]


def test_withdraw_by_form_redirects_and_without_consent_still_clears(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        client.cookies.set("_mk_pixel", "x")
        response = client.post("/_consent/withdraw", data={"return_to": "/students"})
    assert response.status_code == 303 and response.headers["location"] == "/students"
    assert {"cg_consent", "_mk_pixel"} == set(set_cookie_map(response))


def test_announced_policy_change_is_shown_before_it_takes_effect(make_settings: Callable[..., Settings]) -> None:
    import datetime as dt

    from consent_gateway import PolicyVersion

    today = dt.datetime.now(dt.UTC).date()
    upcoming = PolicyVersion(2, 0, today + dt.timedelta(days=20), today - dt.timedelta(days=10))
    with client_for(_gateway(make_settings, upcoming_policy=upcoming)) as client:
        state = client.get("/_consent/state").json()
        page = client.get("/", headers={"Accept-Language": "en"}).text
        client.cookies.set("cg_consent", sign_cookie(SECRET, version="1.0"))
        still_given = client.get("/consent").json()["status"]
    assert state["policy"]["version"] == "1.0"
    assert state["upcoming"] == {"version": "2.0", "effective": upcoming.effective.isoformat(), "major": True}
    assert "cg-upcoming" in page and upcoming.effective.isoformat() in page
    assert still_given == "given"  # announced, not yet in force: nobody is asked again


def test_a_narrower_choice_deletes_cookies_of_refused_categories(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        client.post("/_consent/", json={"action": "accept_all"})
        client.get("/")  # the site sets one cookie of every category
        response = client.post("/_consent/", json={"action": "save", "categories": ["analytics"]})
    deleted = {name for name, header in set_cookie_map(response).items() if "Max-Age=0" in header}
    assert deleted == {"ui_lang", "_mk_pixel", "_mk_campaign"}  # kept: palette_session, _pa_id, cg_consent


def test_deletions_cover_domain_and_host_only_cookies(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings, cookie_domain="testserver.local")) as client:
        client.cookies.set("_pa_id", "x")
        response = client.post("/_consent/withdraw", json={})
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith("_pa_id=")]
    assert len(headers) == 2
    assert any("Domain=testserver.local" in h for h in headers)
    assert any("Domain" not in h for h in headers)


def test_return_paths_in_pages_are_escaped_and_stay_on_site(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        settings_page = client.get("/_consent/", params={"return_to": "//evil.com/x"}).text
        injected = client.get('/students?q="><script>alert(1)</script>').text
    assert "evil.com" not in settings_page
    assert "<script>alert(1)</script>" not in injected
    hidden = re.search(r'<input[^>]*name="return_to"[^>]*>', injected)
    assert hidden is not None and _attr(hidden.group(0), "value").startswith("/students?q=")


def test_multipart_choice_gets_a_4xx_naming_the_form_encoding(make_settings: Callable[..., Settings]) -> None:
    with client_for(_gateway(make_settings)) as client:
        response = client.post("/_consent/", data={"action": "accept_all"}, files={"f": ("a.txt", b"x")})
    assert response.status_code == 400
    assert "application/x-www-form-urlencoded" in response.json()["error"]
    assert "set-cookie" not in response.headers
