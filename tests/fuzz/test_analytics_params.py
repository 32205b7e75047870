"""The analytics API's parameters and tokens under hostile input.

Properties: parameters parse into a checked query or a 4xx naming the problem (10,000 cases of the
pure parser); over HTTP, no token means 401 and no data, any parameters with a token mean an
answer or a 4xx, never a 5xx, and no error body carries internals (SQL, paths, engine messages).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_gateway import Settings
from consent_gateway.analytics.app import create_analytics_app
from consent_gateway.analytics.params import DIMENSIONS, ENDPOINT_PARAMS, MAX_LIMIT, Query
from consent_gateway.analytics.tokens import TokenStore
from consent_gateway.errors import RequestError
from consent_gateway.store import Store, migrate

from .asgi import Driver
from .strategies import PARSER_CASES

TODAY = dt.date(2026, 11, 25)
INTERNALS = ("Traceback", 'File "', "/work/", "/tmp/", "site-packages", "SELECT", "chdb", "Code:", "DB::", "127.0.0.1")
_NAMES = sorted({n for names in ENDPOINT_PARAMS.values() for n in names} | {"x", "", "limit", "steps", "token"})
_VALUES = st.one_of(
    st.sampled_from(
        [
            "today",
            "7d",
            "30d",
            "12mo",
            "99y",
            "2026-11-01",
            "2026-02-30",
            "0000-01-01",
            "9999-12-31",
            "-1",
            "0",
            str(MAX_LIMIT),
            str(MAX_LIMIT + 1),
            "1e9",
            "json",
            "csv",
            "xml",
            "raw",
            "rollup",
            "hour",
            "day",
            "page:/a>page:/b",
            "event:signup",
            "page:",
            "event:" + "x" * 600,
            "' OR 1=1 --",
            "`events`",
            "\x00",
            *DIMENSIONS,
        ]
    ),
    st.text(max_size=30),
)
_ITEMS = st.lists(st.tuples(st.sampled_from(_NAMES), _VALUES), max_size=6)
_ENDPOINTS = st.sampled_from([*ENDPOINT_PARAMS, "nope", "", "../secrets", "aggregate;drop"])


@settings(max_examples=PARSER_CASES, deadline=None, database=None)
@given(_ENDPOINTS, _ITEMS)
def test_analytics_parameters_parse_or_name_the_problem(endpoint: str, items: list[tuple[str, str]]) -> None:
    try:
        query = Query.from_items(endpoint, items, default_site="palette", today=TODAY)
    except RequestError as exc:
        assert exc.status in (400, 404, 422)
        assert exc.message and len(exc.message) < 600
        return
    assert query.endpoint in ENDPOINT_PARAMS
    assert query.start <= query.end
    assert (query.end - query.start).days <= 3660
    for dimension, _ in query.filters:
        assert dimension in DIMENSIONS
    if getattr(query, "dimension", None):
        assert query.dimension in DIMENSIONS
    if getattr(query, "limit", None) is not None:
        assert 1 <= query.limit <= MAX_LIMIT


def test_analytics_api_never_fails_and_needs_its_token(make_settings: Callable[..., Settings], store: Store) -> None:
    settings_ = make_settings()
    migrate(store)
    token, _ = TokenStore(settings_.tokens_path).create("fuzz")
    driver = Driver(create_analytics_app(settings_, store=store))
    seen: set[int] = set()

    @settings(
        max_examples=max(60, PARSER_CASES // 40),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(_ENDPOINTS, _ITEMS, st.sampled_from(["good", "none", "wrong", "basic", "empty"]))
    def run(endpoint: str, items: list[tuple[str, str]], auth: str) -> None:
        from urllib.parse import urlencode

        header = {
            "good": f"Bearer {token}",
            "none": None,
            "wrong": "Bearer " + "x" * 43,
            "basic": f"Basic {token}",
            "empty": "Bearer ",
        }[auth]
        headers = [] if header is None else [(b"authorization", header.encode())]
        reply = driver.request("GET", f"/api/v1/{endpoint}", query=urlencode(items).encode(), headers=headers)
        seen.add(reply.status)
        assert reply.status < 500, (reply.status, reply.body[:300])
        if auth != "good":
            assert reply.status in (401, 404), reply.status
            if reply.status == 401:
                assert reply.first("www-authenticate") == "Bearer"
                assert set(json.loads(reply.body)) == {"error"}
        ctype = reply.first("content-type") or ""
        if (reply.status >= 400 and reply.status != 404) or ctype.startswith("application/json"):
            assert ctype.startswith("application/json"), ctype
            error = json.loads(reply.body).get("error", "")
            for marker in INTERNALS:
                assert marker not in error, error
        assert reply.first("x-content-type-options") == "nosniff" or reply.status == 404

    run()
    assert 200 in seen and 401 in seen and 400 in seen, seen


def test_analytics_store_failure_is_a_503_without_internals(make_settings: Callable[..., Settings]) -> None:
    # A server URL nothing listens on: the real client fails to connect, as in an outage.
    settings_ = make_settings(clickhouse_url="http://default:hunter2@127.0.0.1:9/")
    token, _ = TokenStore(settings_.tokens_path).create("fuzz")
    driver = Driver(create_analytics_app(settings_))
    reply = driver.request("GET", "/api/v1/aggregate", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert reply.status == 503
    error = json.loads(reply.body)["error"]
    assert "unavailable" in error
    for marker in (*INTERNALS, "hunter2", "http://", ":9"):
        assert marker not in error, error
