"""Children under 14: the app's header and call, the consent they restrict, the cookie that keeps the mark."""

from __future__ import annotations

import asyncio
from typing import Any

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
    ChildGuard,
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
from consent_gateway.cookies import set_cookie_name
from consent_gateway.policy import DROP, EVENT, KEEP, Policy
from consent_gateway.registry import CategoryRegistry
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


_BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
_EVENT_OF = {"marketing": "signup", "analytics": "pageview"}  # the test settings' event registry


def _decide_event(policy: Policy, category: str, consent: Consent) -> str:
    """What the policy matrix does with an event of ``category`` (one the test settings register)."""
    decision = policy.decide(EVENT, _EVENT_OF[category], consent, _BROWSER)
    return DROP if decision is None else decision.action


def test_the_policy_drops_a_marked_childs_marketing_events(settings: Settings) -> None:
    policy = Policy(settings)
    consent = Consent(ConsentStatus.GIVEN, ALL, consent_id="cid-child")
    assert _decide_event(policy, "marketing", consent) == KEEP
    child = restrict_consent(consent, CHILD)
    assert _decide_event(policy, "marketing", child) == DROP
    assert _decide_event(policy, "analytics", child) == KEEP
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
    # One character of the signature changed (a fully significant one: the last carries padding bits).
    tampered = value[:-10] + ("A" if value[-10] != "A" else "B") + value[-9:]
    assert codec.decode(tampered) is None and codec.decode("") is None
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


# -- the gateway's two calls, around a real Starlette app ---------------------------------------------


def _site() -> Starlette:
    async def page(request: Request) -> PlainTextResponse:
        response = PlainTextResponse("ok")
        response.set_cookie("_mk_pixel", "1")
        response.set_cookie("palette_session", "s")
        if request.query_params.get("header"):
            response.headers["X-Consent-Child"] = request.query_params["header"]
        if request.query_params.get("call"):
            mark_child(request.scope, guardian=request.query_params.getlist("guardian"))
        return response

    return Starlette(routes=[Route("/", page)])


def _through_guard(settings: Settings, url: str, cookie: str = "") -> tuple[dict[str, Any], Consent]:
    """One request through the guard's two call sites, as ConsentMiddleware makes them, and the
    gateway's own Set-Cookie filter (its CategoryRegistry) applied with the consent the guard returns."""
    guard = ChildGuard(settings)
    registry = CategoryRegistry(settings.cookie_registry, unknown_category="preferences")
    everything = Consent(ConsentStatus.GIVEN, ALL, consent_id="cid-child")
    start: dict[str, Any] = {}
    enforced: list[Consent] = []

    async def gateway(scope: Any, receive: Any, send: Any) -> None:
        consent = guard.on_request(scope, everything)
        scope["consent"] = consent

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers, final = guard.on_response(scope, list(message["headers"]), consent)
                enforced.append(final)
                message["headers"] = [
                    (k, v)
                    for k, v in headers
                    if k != b"set-cookie"
                    or v.startswith(b"cg_child=")
                    or final.allows(registry.category_of(set_cookie_name(v)))
                ]
                start.update(message)
            await send(message)

        await _site()(scope, receive, send_wrapper)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://t") as client:
            await client.get(url, headers={"cookie": cookie} if cookie else {})

    asyncio.run(go())
    return start, enforced[0]


def _cookies(start: dict[str, Any]) -> dict[str, bytes]:
    return {v.split(b"=", 1)[0].decode(): v for k, v in start["headers"] if k == b"set-cookie"}


def test_a_header_mark_strips_marketing_now_and_is_kept_in_a_cookie(settings: Settings) -> None:
    start, consent = _through_guard(settings, "/?header=1")
    assert not any(k.lower() == b"x-consent-child" for k, _ in start["headers"])
    cookies = _cookies(start)
    assert "_mk_pixel" not in cookies and "palette_session" in cookies
    assert b"HttpOnly" in cookies["cg_child"] and b"Max-Age=31536000" in cookies["cg_child"]
    assert not consent.allows("marketing") and consent.allows("analytics")
    assert _decide_event(Policy(settings), "marketing", consent) == DROP
    # The next request carries the cookie: marketing stays refused, and no new cookie is sent.
    kept = cookies["cg_child"].split(b";", 1)[0].decode()
    start, consent = _through_guard(settings, "/", cookie=kept)
    assert set(_cookies(start)) == {"palette_session"} and not consent.allows("marketing")


def test_a_guardians_consent_through_the_python_call(settings: Settings) -> None:
    start, consent = _through_guard(settings, "/?call=1&guardian=marketing")
    assert {"_mk_pixel", "cg_child"} <= set(_cookies(start)) and consent.allows("marketing")
    start, consent = _through_guard(settings, "/?call=1")
    assert "_mk_pixel" not in _cookies(start)


def test_an_adult_mark_deletes_the_cookie(settings: Settings) -> None:
    start, _ = _through_guard(settings, "/?header=1")
    child = _cookies(start)["cg_child"].split(b";", 1)[0].decode()
    start, consent = _through_guard(settings, "/?header=0", cookie=child)
    assert _cookies(start)["cg_child"].startswith(b"cg_child=; Max-Age=0") and consent.allows("marketing")
    # A forged cookie is no mark.
    _, consent = _through_guard(settings, "/", cookie="cg_child=forged.value")
    assert consent.allows("marketing")
    assert ChildGuard.mark_of({}) is None


def test_a_mark_applies_to_a_response_whose_headers_the_gateway_already_knows(settings: Settings) -> None:
    from consent_gateway import ConsentGateway

    from .gateway_support import client_for

    async def plain(request: Request) -> PlainTextResponse:
        response = PlainTextResponse("ok")  # no Set-Cookie: the same headers on every answer
        if request.query_params.get("header"):
            response.headers["X-Consent-Child"] = "1"
        if request.query_params.get("call"):
            mark_child(request.scope)
        return response

    with client_for(ConsentGateway(Starlette(routes=[Route("/", plain)]), settings)) as client:
        for _ in range(2):  # the gateway keeps these headers as filtered once
            assert "set-cookie" not in client.get("/").headers
        for url in ("/?call=1", "/?header=1", "/?header=1", "/?call=1"):
            client.cookies.clear()
            answer = client.get(url)
            assert "x-consent-child" not in answer.headers
            assert answer.headers["set-cookie"].startswith("cg_child="), url
        client.cookies.clear()
        assert "set-cookie" not in client.get("/").headers
