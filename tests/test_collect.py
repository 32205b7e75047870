"""``POST /_consent/collect``: one event or a list, counts that follow the consent, limits and errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from consent_gateway import ConsentGateway, Settings
from consent_gateway.request import RequestFacts
from tests.conftest import SECRET
from tests.gateway_support import client_for, sign_cookie, site_app

EVENTS = [
    {"name": "pageview", "url": "/students"},
    {"name": "portfolio_view", "url": "/portfolio", "props": {"item": 3}},
    {"name": "signup", "url": "/?utm_source=ad"},
    {"name": "custom_click"},  # not registered: counts as analytics (unknown_event_category)
]


@pytest.mark.parametrize(
    ("categories", "kept", "pseudonymised", "dropped"),
    [
        (None, 0, 3, 1),
        (["necessary"], 0, 3, 1),
        (["necessary", "analytics"], 3, 0, 1),
        (["necessary", "marketing"], 1, 3, 0),
        (["necessary", "preferences", "analytics", "marketing"], 4, 0, 0),
    ],
    ids=["no-consent", "reject-all", "analytics", "marketing", "accept-all"],
)
def test_counts_follow_the_policy_matrix(
    make_settings: Callable[..., Settings], categories: list[str] | None, kept: int, pseudonymised: int, dropped: int
) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        if categories is not None:
            client.cookies.set("cg_consent", sign_cookie(SECRET, categories=categories))
        response = client.post("/_consent/collect", json=EVENTS)
    assert response.status_code == 202
    assert response.json() == {"accepted": 4, "kept": kept, "pseudonymised": pseudonymised, "dropped": dropped}


def test_single_event_and_text_plain_beacon(make_settings: Callable[..., Settings]) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        one = client.post("/_consent/collect", json={"name": "pageview"})
        beacon = client.post(
            "/_consent/collect", content=json.dumps({"name": "pageview"}), headers={"content-type": "text/plain"}
        )
    assert one.status_code == 202 and one.json()["accepted"] == 1 and one.json()["pseudonymised"] == 1
    assert beacon.status_code == 202 and beacon.json()["accepted"] == 1


def test_gpc_drops_marketing_events_of_an_accept_all_visitor(make_settings: Callable[..., Settings]) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        response = client.post("/_consent/collect", json=EVENTS, headers={"Sec-GPC": "1"})
    assert response.json() == {"accepted": 4, "kept": 3, "pseudonymised": 0, "dropped": 1}


def test_outdated_consent_counts_as_no_consent(make_settings: Callable[..., Settings]) -> None:
    import datetime as dt

    from consent_gateway import PolicyVersion

    settings = make_settings(policy=PolicyVersion(2, 0, dt.date(2026, 1, 1)))
    with client_for(ConsentGateway(site_app(), settings)) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET, version="1.0"))
        response = client.post("/_consent/collect", json=EVENTS)
    assert response.json() == {"accepted": 4, "kept": 0, "pseudonymised": 3, "dropped": 1}


BAD_BODIES = [
    # (body bytes, content type, status, words in the message)
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"name": "pageview", "props": {"x": NaN}}', "application/json", 400, "NaN is not allowed"),
    (b'{"name": "pageview", "props": {"x": Infinity}}', "application/json", 400, "Infinity is not allowed"),
    (b'{"name": "pageview", "name": "signup"}', "application/json", 400, "appears twice"),
    (b"[]", "application/json", 400, "empty"),
    (b'"pageview"', "application/json", 400, "each event is an object"),
    (b'{"name": "pageview", "ip": "1.2.3.4"}', "application/json", 400, "not a known field"),
    (b"\xff\xfe", "application/json", 400, "not valid JSON"),
    (b'{"name": "9lives"}', "application/json", 422, "name must be"),
    (b'{"name": ""}', "application/json", 422, "name must be"),
    (b'{"name": "a b"}', "application/json", 422, "name must be"),
    (b'{"url": "/"}', "application/json", 422, "name must be"),
    (b'{"name": "x", "props": [1]}', "application/json", 422, "props must be an object"),
    (b'{"name": "x", "props": {"a": {"b": 1}}}', "application/json", 422, "values must be strings"),
    (b'{"name": "x", "props": {"a": [1]}}', "application/json", 422, "values must be strings"),
    (json.dumps({"name": "x", "props": {"a": "v" * 300}}).encode(), "application/json", 422, "the limit is 256"),
    (
        json.dumps({"name": "x", "props": {f"k{i}": i for i in range(21)}}).encode(),
        "application/json",
        422,
        "the limit is 20",
    ),
    (json.dumps({"name": "x", "props": {"a": 2**60}}).encode(), "application/json", 422, "out of range"),
    (json.dumps({"name": "x", "url": "/" * 3000}).encode(), "application/json", 422, "the limit is 2048"),
    (b'{"name": "x", "url": 5}', "application/json", 422, "url must be a string"),
    (b'{"name": "pageview"}', "application/xml", 415, "application/json"),
    (b"name=pageview", "application/x-www-form-urlencoded", 415, "application/json"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "words"), BAD_BODIES)
def test_bad_bodies_get_a_4xx_with_a_message(
    make_settings: Callable[..., Settings], body: bytes, ctype: str, status: int, words: str
) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        response = client.post("/_consent/collect", content=body, headers={"content-type": ctype})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_field_names_the_offending_event(make_settings: Callable[..., Settings]) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        response = client.post("/_consent/collect", json=[{"name": "ok"}, {"name": "ok", "props": {"a": [1]}}])
    assert response.status_code == 422
    assert response.json()["field"] == "events[1].props.a"


def test_too_many_events_is_413(make_settings: Callable[..., Settings]) -> None:
    with client_for(ConsentGateway(site_app(), make_settings(collect_max_events=5))) as client:
        ok = client.post("/_consent/collect", json=[{"name": "pageview"}] * 5)
        too_many = client.post("/_consent/collect", json=[{"name": "pageview"}] * 6)
    assert ok.status_code == 202
    assert too_many.status_code == 413
    assert "6 events" in too_many.json()["error"] and "at most 5" in too_many.json()["error"]


def test_too_big_body_is_413_declared_or_streamed(make_settings: Callable[..., Settings]) -> None:
    big = json.dumps([{"name": "pageview", "url": "/" + "a" * 1000}] * 40).encode()
    with client_for(ConsentGateway(site_app(), make_settings(collect_max_body=4096))) as client:
        declared = client.post("/_consent/collect", content=big, headers={"content-type": "application/json"})

        def chunks():  # no Content-Length: the limit applies while reading
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        streamed = client.post("/_consent/collect", content=chunks(), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "limit is 4096" in declared.json()["error"]
    assert streamed.status_code == 413 and "4096" in streamed.json()["error"]


def test_full_queue_sheds_with_503(make_settings: Callable[..., Settings]) -> None:
    gateway = ConsentGateway(site_app(), make_settings(queue_max=3, flush_interval=30))
    with client_for(gateway) as client:
        response = client.post("/_consent/collect", json=[{"name": "pageview"}] * 4)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "busy" in response.json()["error"]


def test_answers_carry_the_gateway_headers_and_bodies_may_come_in_chunks(
    make_settings: Callable[..., Settings],
) -> None:
    body = json.dumps([{"name": "pageview", "url": f"/p{i}"} for i in range(20)]).encode()
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        chunked = client.post(
            "/_consent/collect",
            content=iter([body[:7], b"", body[7:100], body[100:]]),
            headers={"content-type": "application/json"},
        )
        refused = client.post("/_consent/collect", content=b'{"name":"a","name":"b"}')
    assert chunked.status_code == 202
    assert chunked.content == b'{"accepted":20,"kept":0,"pseudonymised":20,"dropped":0}'
    assert refused.status_code == 400
    assert refused.json() == {"error": "the key 'name' appears twice in one object; send it once"}
    for response in (chunked, refused):
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-length"] == str(len(response.content))
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_queued_events_hold_nothing_the_garbage_collector_walks(make_settings: Callable[..., Settings]) -> None:
    """While a request waits for the group commit, its events are structs the garbage collector
    never tracks; the parsed body is gone by then."""
    import gc

    gateway = ConsentGateway(site_app(), make_settings())
    pipeline = gateway.runtime.pipeline
    queued = []
    submit = pipeline.submit_events

    async def spy(events):  # type: ignore[no-untyped-def]
        queued.append(events)
        return await submit(events)

    pipeline.submit_events = spy
    with client_for(gateway) as client:
        client.cookies.set("cg_consent", sign_cookie(SECRET))
        response = client.post("/_consent/collect", json=EVENTS)
    assert response.status_code == 202 and len(queued) == 1
    batch = queued[0]
    assert len(batch) == 4 and [event.name for event in batch.events][:3] == ["pageview", "portfolio_view", "signup"]
    assert batch.events[1].props == '{"item":3}', "props travel as their JSON text"
    gc.collect()
    assert not any(gc.is_tracked(event) for event in batch.events)


def test_the_origin_checks_read_the_first_of_repeated_headers() -> None:
    """As ``Request.headers.get`` reads them: the first value, whether or not another header repeats."""
    once = [(b"host", b"site.example"), (b"origin", b"https://site.example"), (b"cookie", b"a=1")]
    assert RequestFacts(once, b"cg_consent").first_values(frozenset({b"origin"}))[b"origin"] == b"https://site.example"
    twice = [*once, (b"origin", b"https://evil.example"), (b"cookie", b"b=2")]
    facts = RequestFacts(twice, b"cg_consent")
    first = facts.first_values(frozenset({b"origin", b"host"}))
    assert first == {b"host": b"site.example", b"origin": b"https://site.example"}
    assert facts.cookie_headers == [b"a=1", b"b=2"]


def test_a_repeated_origin_is_checked_by_its_first_value(make_settings: Callable[..., Settings]) -> None:
    with client_for(ConsentGateway(site_app(), make_settings())) as client:
        body = json.dumps({"name": "pageview", "url": "/"})
        own_first = [("content-type", "application/json"), ("origin", "http://testserver"),
                     ("origin", "https://evil.example")]  # fmt: skip
        assert client.post("/_consent/collect", content=body, headers=own_first).status_code == 202
        evil_first = [("content-type", "application/json"), ("origin", "https://evil.example"),
                      ("origin", "http://testserver")]  # fmt: skip
        assert client.post("/_consent/collect", content=body, headers=evil_first).status_code == 403
