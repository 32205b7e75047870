"""Abuse limits: per-client token buckets, bot and crawler filtering, the distinct event-name cap."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from consent_gateway.ratelimit import OTHER_EVENT, EventNameCap, RateLimited, RateLimits, TokenBucket, client_key
from consent_gateway.store import Store

from ..support import flush
from .asgi import Driver
from .conftest import ScriptedApp
from .strategies import PARSER_CASES

Build = Callable[..., tuple[Driver, ScriptedApp]]
SAME = [(b"origin", b"http://site.example")]
JSON = [(b"content-type", b"application/json"), *SAME]
BROWSER = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
BOTS = [
    b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    b"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    b"Mozilla/5.0 Chrome/120.0 Safari/537.36 Puppeteer",
    b"Mozilla/5.0 (Macintosh) AppleWebKit/537.36 Chrome/120 Safari/537.36 Chrome-Lighthouse",
]


class Clock:
    """A clock the test moves by hand (the bucket refills by it; nothing here reads wall time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=PARSER_CASES // 5, deadline=None, database=None)
@given(
    st.floats(min_value=0.5, max_value=600),
    st.integers(min_value=1, max_value=20),
    st.lists(st.tuples(st.floats(min_value=0, max_value=30), st.sampled_from(["a", "b", "c"])), max_size=60),
)
def test_token_bucket_never_allows_more_than_burst_plus_refill(
    per_minute: float, burst: int, steps: list[tuple[float, str]]
) -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute, burst, clock=clock)
    start = clock.now
    allowed: dict[str, int] = {}
    for delay, key in steps:
        clock.now += delay
        wait = bucket.take(key)
        assert wait >= 0
        if wait == 0:
            allowed[key] = allowed.get(key, 0) + 1
        else:
            # The promised wait is enough: after it, one request passes.
            probe = TokenBucket(per_minute, burst, clock=clock)
            probe._buckets = bucket._buckets.copy()
            clock.now += wait + 1e-6
            assert probe.take(key) == 0
            clock.now -= wait + 1e-6
        budget = burst + (clock.now - start) * per_minute / 60
        assert allowed.get(key, 0) <= budget + 1e-9


def test_token_bucket_forgets_the_least_recent_clients_first() -> None:
    clock = Clock()
    bucket = TokenBucket(60, 1, max_keys=2, clock=clock)
    assert bucket.take("a") == 0 and bucket.take("b") == 0
    assert bucket.take("a") > 0  # a is empty and now the most recent
    assert bucket.take("c") == 0  # b is forgotten, not a
    assert bucket.take("a") > 0
    assert len(bucket._buckets) == 2


def test_clients_are_told_apart_by_address_and_ipv6_prefix() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    # No address, or loopback (a local proxy not listed in trusted_proxies): one bucket for every
    # visitor would shut the site out, so these are not limited.
    for unknown in ("", "testclient", "127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert client_key(unknown) is None
    limits = RateLimits(collect_per_minute=1, collect_burst=1, consent_per_minute=0, consent_burst=1)
    for _ in range(5):
        limits.check("collect", "127.0.0.1")
        limits.check("consent", "203.0.113.9")


def test_collect_and_consent_routes_answer_429_with_retry_after(make_gateway: Build) -> None:
    driver, _ = make_gateway(
        rate_limit_collect_per_minute=1,
        rate_limit_collect_burst=3,
        rate_limit_consent_per_minute=1,
        rate_limit_consent_burst=2,
    )
    event = b'{"name":"pageview"}'
    one = ("198.51.100.1", 1)
    for _ in range(3):
        assert driver.request("POST", "/_consent/collect", headers=JSON, body=event, client=one).status == 202
    limited = driver.request("POST", "/_consent/collect", headers=JSON, body=event, client=one)
    assert limited.status == 429
    assert limited.first("content-type") == "application/json"
    assert int(limited.first("retry-after") or "0") >= 1
    assert "retry in" in json.loads(limited.body)["error"]
    assert limited.first("x-content-type-options") == "nosniff"
    # Another client is not affected; the consent routes have their own bucket.
    assert (
        driver.request("POST", "/_consent/collect", headers=JSON, body=event, client=("198.51.100.2", 1)).status == 202
    )
    choice = b'{"action":"reject_all"}'
    assert driver.request("POST", "/_consent/", headers=JSON, body=choice, client=one).status == 200
    assert driver.request("GET", "/_consent/receipts", client=one).status == 200
    refused = driver.request("POST", "/_consent/withdraw", headers=JSON, body=b"{}", client=one)
    assert refused.status == 429 and not refused.header("set-cookie")
    # Reading state and static files is never limited.
    assert driver.request("GET", "/_consent/state", client=one).status == 200


def test_rate_limit_settings_are_validated(make_settings: Callable[..., object]) -> None:
    import pytest

    from consent_gateway.errors import SettingsError

    with pytest.raises(SettingsError, match="rate_limit_collect_per_minute"):
        make_settings(rate_limit_collect_per_minute=-1)
    with pytest.raises(SettingsError, match="rate_limit_consent_burst"):
        make_settings(rate_limit_consent_burst=0)
    with pytest.raises(SettingsError, match="max_event_names"):
        make_settings(max_event_names=0)


# -- bots and crawlers --------------------------------------------------------------------------


def test_bot_and_headless_traffic_is_flagged_and_left_out_of_analytics(make_gateway: Build, store: Store) -> None:
    """By default bots are stored with is_bot = 1; every analytics query and rollup reads is_bot = 0."""
    driver, _ = make_gateway()
    for ua in BOTS:
        assert driver.request("GET", "/crawled", headers=[(b"user-agent", ua)]).status == 200
    driver.request("GET", "/visited", headers=[(b"user-agent", BROWSER)])
    flush(driver, timeout=20.0)
    rows = store.query_rows(f"SELECT path, is_bot, device FROM {store.table('events')} ORDER BY path, is_bot")
    assert rows == [("/crawled", 1, "bot")] * len(BOTS) + [("/visited", 0, "desktop")]
    daily = store.query_rows(f"SELECT path, sum(hits) FROM {store.table('events_daily')} GROUP BY path")
    assert daily == [("/visited", 1)]


def test_bots_can_be_dropped_entirely(make_gateway: Build, store: Store) -> None:
    driver, _ = make_gateway(drop_bots=True)
    for ua in BOTS:
        assert driver.request("GET", "/crawled", headers=[(b"user-agent", ua)]).status == 200
        reply = driver.request(
            "POST",
            "/_consent/collect",
            headers=[*JSON, (b"user-agent", ua)],
            body=b'{"name":"pageview","url":"/crawled"}',
        )
        assert reply.status == 202 and json.loads(reply.body)["dropped"] == 1
    driver.request("GET", "/visited", headers=[(b"user-agent", BROWSER)])
    driver.request(
        "POST",
        "/_consent/collect",
        headers=[*JSON, (b"user-agent", BROWSER)],
        body=b'{"name":"pageview","url":"/visited"}',
    )
    flush(driver, timeout=20.0)
    rows = store.query_rows(f"SELECT path, kind, is_bot FROM {store.table('events')} ORDER BY kind")
    assert rows == [("/visited", "event", 0), ("/visited", "visit", 0)]


# -- distinct event names -------------------------------------------------------------------------


def test_event_names_beyond_the_cap_are_folded(make_gateway: Build, store: Store) -> None:
    overrides = {"max_event_names": 3, "event_registry": (("pageview", "analytics"), ("ad_*", "marketing"))}
    driver, _ = make_gateway(**overrides)
    names = ["pageview", "a1", "a2", "a3", "a4", "a5", "a1", "pageview", "ad_click"]
    body = json.dumps([{"name": n} for n in names]).encode()
    reply = driver.request("POST", "/_consent/collect", headers=JSON, body=body)
    assert reply.status == 202
    # A marketing event without consent is still dropped: the category follows the real name.
    assert json.loads(reply.body) == {"accepted": 9, "kept": 0, "pseudonymised": 8, "dropped": 1}
    flush(driver, timeout=20.0)
    stored = [r[0] for r in store.query_rows(f"SELECT name FROM {store.table('events')} WHERE kind = 'event'")]
    assert sorted(stored) == sorted(["pageview", "a1", "a2", "a3", OTHER_EVENT, OTHER_EVENT, "a1", "pageview"])
    # A restarted worker counts the names already stored: the cap does not open again.
    driver.close()
    again, _ = make_gateway(**overrides)
    reply = again.request("POST", "/_consent/collect", headers=JSON, body=b'[{"name":"a9"},{"name":"a2"}]')
    assert reply.status == 202, reply.body
    flush(again, timeout=20.0)
    later = store.query_rows(
        f"SELECT name, count() FROM {store.table('events')} WHERE kind = 'event' GROUP BY name ORDER BY name"
    )
    assert dict(later) == {"(other)": 3, "a1": 2, "a2": 2, "a3": 1, "pageview": 2}


def test_event_name_cap_counts_only_unregistered_names() -> None:
    cap = EventNameCap(2, registered=["pageview", "signup"])
    assert [cap.admit(n) for n in ["pageview", "x", "signup", "y", "z", "x", "pageview"]] == [
        "pageview",
        "x",
        "signup",
        "y",
        OTHER_EVENT,
        "x",
        "pageview",
    ]
    assert cap.folded == 1


def test_forwarded_for_cannot_dodge_the_limit(make_gateway: Build) -> None:
    """X-Forwarded-For counts only when the connecting address is a trusted proxy."""
    driver, _ = make_gateway(
        rate_limit_collect_per_minute=1, rate_limit_collect_burst=2, trusted_proxies=("10.0.0.0/8",)
    )
    event = b'{"name":"pageview"}'
    direct = ("198.51.100.9", 1)
    statuses = [
        driver.request(
            "POST",
            "/_consent/collect",
            body=event,
            client=direct,
            headers=[*JSON, (b"x-forwarded-for", f"203.0.113.{i}".encode())],
        ).status
        for i in range(4)
    ]
    assert statuses == [202, 202, 429, 429]
    # Behind the trusted proxy, each visitor has a bucket of their own.
    proxied = [
        driver.request(
            "POST",
            "/_consent/collect",
            body=event,
            client=("10.0.0.2", 1),
            headers=[*JSON, (b"x-forwarded-for", f"203.0.113.{i}, 10.0.0.3".encode())],
        ).status
        for i in range(4)
    ]
    assert proxied == [202, 202, 202, 202]


def test_refused_requests_cost_nothing_when_checked_with_peek_then_charged() -> None:
    # Finding 4: a third-party page's refused POSTs spent the visitor's allowance. With peek()
    # before the origin check and charge() only for accepted requests, they cost nothing.
    clock = Clock()
    limits = RateLimits(collect_per_minute=0, collect_burst=1, consent_per_minute=1, consent_burst=2, clock=clock)
    visitor = "203.0.113.7"
    for _ in range(50):  # cross-site POSTs: peeked, then refused by the origin check, never charged
        limits.peek("consent", visitor)
    limits.peek("consent", visitor)
    limits.charge("consent", visitor)  # the visitor's own withdrawal passes
    limits.charge("consent", visitor)
    try:
        limits.peek("consent", visitor)
    except RateLimited as limited:
        assert limited.status == 429 and limited.retry_after >= 1
    else:
        raise AssertionError("a used-up bucket must refuse on peek")


def test_page_views_have_a_generous_per_ip_limit() -> None:
    clock = Clock()
    limits = RateLimits(
        collect_per_minute=1, collect_burst=1, consent_per_minute=1, consent_burst=1, page_burst=600, clock=clock
    )
    for _ in range(600):  # a busy office behind one address browsing at once
        limits.check("page", "198.51.100.20")
    try:
        limits.check("page", "198.51.100.20")
    except RateLimited:
        pass
    else:
        raise AssertionError("page views past the burst must be limited")
    limits.check("page", "198.51.100.21")  # other clients are untouched
    clock.now += 60.0
    limits.check("page", "198.51.100.20")  # and the bucket refills
