"""Children under 14: the app's header and call, the consent they restrict, the cookie that keeps the mark."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from consent_gateway import Settings
from consent_gateway.children import (
    ADULT,
    CHILD,
    NOTICE,
    ChildCookieCodec,
    ChildHeaderError,
    ChildMark,
    consume_child_header,
    mark_child,
    open_slot,
    parse_header,
    receipt_columns_ddl,
    receipt_fields,
    refused_for_child,
    restrict,
    restrict_consent,
)
from consent_gateway.consent import Consent, ConsentStatus
from consent_gateway.policy import DROP, KEEP, Policy
from consent_gateway.store import Store
from consent_gateway.store.schema import migrate

from .conftest import OLD_SECRET, SECRET

ALL = frozenset({"necessary", "preferences", "analytics", "marketing"})


@pytest.mark.parametrize(
    ("value", "mark"),
    [
        ("1", CHILD),
        (" 1 ", CHILD),
        ("0", ADULT),
        ('1; guardian="marketing"', ChildMark(True, frozenset({"marketing"}))),
        ("1;guardian=marketing, analytics", ChildMark(True, frozenset({"marketing", "analytics"}))),
        ('1; guardian=""', CHILD),
    ],
)
def test_header_values(value: str, mark: ChildMark) -> None:
    assert parse_header(value) == mark


@pytest.mark.parametrize(
    "value", ["yes", "2", "0; guardian=marketing", '1; parent="x"', '1; guardian="Ads!"', "1" * 600]
)
def test_bad_header_values_name_the_fix(value: str) -> None:
    with pytest.raises(ChildHeaderError, match="Send 1, 0"):
        parse_header(value)


def test_the_header_is_consumed_and_the_most_protective_wins() -> None:
    headers = [
        (b"content-type", b"text/html"),
        (b"X-Consent-Child", b'1; guardian="marketing"'),
        (b"x-consent-child", b"1"),
    ]
    kept, mark = consume_child_header(headers)
    assert kept == [(b"content-type", b"text/html")] and mark == CHILD
    kept, mark = consume_child_header([(b"x-consent-child", b"nonsense")])
    assert kept == [] and mark == CHILD
    plain = [(b"content-type", b"text/html")]
    assert consume_child_header(plain) == (plain, None)
    assert consume_child_header([(b"x-consent-child", b"0")])[1] == ADULT


def test_marketing_is_refused_unless_the_guardian_consented() -> None:
    assert restrict(ALL, CHILD) == ALL - {"marketing"}
    assert restrict(ALL, CHILD, ("marketing", "preferences")) == {"necessary", "analytics"}
    assert restrict(ALL, ChildMark(True, frozenset({"marketing"}))) == ALL
    assert restrict(ALL, ADULT) == ALL and restrict(ALL, None) == ALL
    assert refused_for_child(CHILD) == {"marketing"} and refused_for_child(ADULT) == frozenset()
    assert "14" in NOTICE["ko"] and "under 14" in NOTICE["en"]


def test_the_policy_drops_a_marked_childs_marketing_events(settings: Settings) -> None:
    policy = Policy(settings)
    consent = Consent(ConsentStatus.GIVEN, ALL, consent_id="cid-child")
    assert policy.decide_event("marketing", consent) == KEEP
    child = restrict_consent(consent, CHILD)
    assert policy.decide_event("marketing", child) == DROP
    assert policy.decide_event("analytics", child) == KEEP
    assert restrict_consent(consent, ADULT) is consent


def test_mark_child_from_inside_a_starlette_app() -> None:
    async def page(request: Request) -> PlainTextResponse:
        mark_child(request.scope, guardian=["marketing"] if "g" in request.query_params else [])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", page)])
    slots = []

    async def gateway(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        # Only the one call site the gateway needs: a slot before the app runs, read after.
        slots.append(open_slot(scope))
        await app(scope, receive, send)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://t") as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/?g=1")).status_code == 200

    asyncio.run(go())
    assert [s.mark for s in slots] == [CHILD, ChildMark(True, frozenset({"marketing"}))]
    with pytest.raises(RuntimeError, match="no consent gateway"):
        mark_child({})
    with pytest.raises(ValueError, match="not a category key"):
        mark_child({"consent_gateway.child": open_slot({})}, guardian=["Ads!"])


def test_the_cookie_keeps_the_mark_and_refuses_forgeries() -> None:
    codec = ChildCookieCodec((SECRET,), max_age=3600)
    mark = ChildMark(True, frozenset({"marketing"}))
    value = codec.encode(mark)
    assert codec.decode(value) == mark
    assert codec.decode(codec.encode(ADULT)) == ADULT
    assert codec.decode(value[:-2] + "xx") is None and codec.decode("") is None
    assert ChildCookieCodec(("another-secret-0123456789abcdefghijk",), max_age=3600).decode(value) is None
    # After a key rotation the old mark still reads.
    old = ChildCookieCodec((OLD_SECRET,), max_age=3600).encode(CHILD)
    assert ChildCookieCodec((OLD_SECRET, SECRET), max_age=3600).decode(old) == CHILD
    assert SECRET not in repr(codec)


def test_receipts_record_the_mark(store: Store) -> None:
    assert receipt_fields(CHILD) == {"child": 1, "guardian_categories": []}
    assert receipt_fields(ChildMark(True, frozenset({"marketing"})))["guardian_categories"] == ["marketing"]
    assert receipt_fields(None) == {"child": 0, "guardian_categories": []}
    migrate(store)
    for statement in receipt_columns_ddl(store.table("consent_receipts")) * 2:  # additive and idempotent
        store.command(statement)
    columns = dict(
        store.query_rows(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'consent_receipts'",
            {"db": store.database},
        )
    )
    assert columns["child"] == "UInt8" and columns["guardian_categories"] == "Array(LowCardinality(String))"
