"""Hostile requests against a whole gateway on the embedded ClickHouse, called in-process.

One gateway per test function; hypothesis loops inside it. These run fewer cases than the pure
parser tests (each case is a full request through routes, policy and pipeline): the counts are
in ``HTTP_CASES`` and ``STORE_CASES``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_gateway.store import Store

from ..support import flush
from .asgi import Driver, Reply
from .conftest import ScriptedApp
from .strategies import PARSER_CASES, choice_requests, collect_bodies, url_strings

HTTP_CASES = max(200, PARSER_CASES // 10)  # 1,000 by default
STORE_CASES = max(1, PARSER_CASES // 50)  # 200 by default
HTTP = settings(
    max_examples=HTTP_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECURITY_HEADERS = (
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "cache-control",
    "content-security-policy",
)
MAX_RESPONSE = 64 * 1024
INTERNALS = ("Traceback", 'File "', "/work/", "site-packages", "consent_gateway.", "Exception", "chdb", "SELECT ")
SAME = [(b"origin", b"http://site.example")]

Build = Callable[..., tuple[Driver, ScriptedApp]]


def assert_gateway_reply(reply: Reply) -> None:
    """What every answer of the gateway's own routes promises."""
    assert reply.status < 500, (reply.status, reply.body[:300])
    for name in SECURITY_HEADERS:
        assert reply.first(name), f"missing {name}"
    assert reply.first("x-content-type-options") == "nosniff"
    assert len(reply.body) <= MAX_RESPONSE
    ctype = reply.first("content-type") or ""
    if reply.status >= 400:
        assert ctype == "application/json", ctype
        error = json.loads(reply.body)
        assert isinstance(error["error"], str) and error["error"]
        for marker in INTERNALS:
            assert marker not in error["error"], error
    elif reply.status in (200, 202) and reply.body[:1] in (b"{", b"["):
        assert ctype == "application/json"


# -- /_consent: JSON and form bodies ------------------------------------------------------------


def test_choice_route_never_fails_on_hostile_bodies(make_gateway: Build) -> None:
    """The whole route; its JSON and form parser alone runs PARSER_CASES in test_edge_parsers."""
    driver, _ = make_gateway()
    seen: set[int] = set()

    @HTTP
    @given(choice_requests())
    def run(case: tuple[list[tuple[bytes, bytes]], bytes, bool]) -> None:
        headers, body, _ = case
        reply = driver.request("POST", "/_consent/", headers=headers, body=body, content_length=False, chunk=4096)
        seen.add(reply.status)
        assert_gateway_reply(reply)
        if reply.status == 303:
            location = reply.first("location") or ""
            assert urlsplit(urljoin("http://site.example/x", location)).netloc == "site.example", location
        if reply.status in (200, 303):
            names = [v.split(b"=", 1)[0] for v in reply.header("set-cookie")]
            assert b"cg_consent" in names
        if len(body) > 16_384:
            assert reply.status == 413 or reply.status == 400 or reply.status == 415, reply.status

    run()
    assert {200, 303, 400}.issubset(seen), seen  # the generator reached valid and invalid paths


# -- /_consent/collect ---------------------------------------------------------------------------


def test_collect_never_fails_on_hostile_bodies(make_gateway: Build) -> None:
    driver, _ = make_gateway()
    seen: set[int] = set()

    @HTTP
    @given(collect_bodies(), st.sampled_from([b"application/json", b"text/plain;charset=UTF-8", b"", b"text/html"]))
    def run(body: bytes, ctype: bytes) -> None:
        headers = [(b"content-type", ctype)] if ctype else []
        reply = driver.request("POST", "/_consent/collect", headers=headers + SAME, body=body)
        seen.add(reply.status)
        assert_gateway_reply(reply)
        if reply.status == 202:
            counts = json.loads(reply.body)
            assert counts["accepted"] == counts["kept"] + counts["pseudonymised"] + counts["dropped"]
            assert 1 <= counts["accepted"] <= 50

    run()
    assert {202, 400, 413, 422}.issubset(seen), seen


def test_collect_with_lone_surrogates_is_refused_and_does_not_block_the_writer(
    make_gateway: Build, store: Store
) -> None:
    driver, _ = make_gateway()
    bad = b'{"name":"pageview","url":"/a\\ud800"}'
    assert driver.request("POST", "/_consent/collect", headers=SAME, body=bad).status == 422
    bad_props = b'{"name":"pageview","props":{"k":"\\udfff"}}'
    assert driver.request("POST", "/_consent/collect", headers=SAME, body=bad_props).status == 422
    ok = b'{"name":"pageview","url":"/fine"}'
    assert driver.request("POST", "/_consent/collect", headers=SAME, body=ok).status == 202
    flush(driver, timeout=20.0)
    rows = store.query_rows(f"SELECT path FROM {store.table('events')} WHERE kind = 'event'")
    assert rows == [("/fine",)]


def test_body_limits_hold_with_and_without_content_length(make_gateway: Build) -> None:
    driver, _ = make_gateway(collect_max_body=1000, collect_max_events=3)
    big = b'{"name":"pageview","url":"/' + b"a" * 1200 + b'"}'
    for declared in (True, False):
        reply = driver.request("POST", "/_consent/collect", headers=SAME, body=big, content_length=declared, chunk=100)
        assert reply.status == 413, reply.body
    four = json.dumps([{"name": "pageview"}] * 4).encode()
    reply = driver.request("POST", "/_consent/collect", headers=SAME, body=four)
    assert reply.status == 413 and b"at most 3" in reply.body
    three = json.dumps([{"name": "pageview"}] * 3).encode()
    assert driver.request("POST", "/_consent/collect", headers=SAME, body=three).status == 202
    form = b"action=accept_all&return_to=/&pad=" + b"x" * 17_000
    for declared in (True, False):
        reply = driver.request(
            "POST",
            "/_consent/",
            body=form,
            content_length=declared,
            chunk=1000,
            headers=[(b"content-type", b"application/x-www-form-urlencoded"), *SAME],
        )
        assert reply.status == 413, reply.body
        assert not reply.header("set-cookie")


# -- CSRF: every state-changing route ---------------------------------------------------------------

_POSTS = [
    ("/_consent/", b"application/json", b'{"action":"accept_all"}'),
    ("/_consent/", b"application/x-www-form-urlencoded", b"action=accept_all"),
    ("/_consent/withdraw", b"application/json", b"{}"),
    ("/_consent/withdraw", b"application/x-www-form-urlencoded", b""),
    ("/_consent/collect", b"application/json", b'{"name":"pageview"}'),
    ("/_consent/collect", b"text/plain", b'{"name":"pageview"}'),
]
_ORIGINS = st.one_of(
    st.sampled_from(
        [
            "http://site.example",
            "https://site.example",
            "http://SITE.example",
            "http://site.example:80",
            "http://evil.example",
            "null",
            "",
            "http://site.example.evil.example",
            "http://evil.example/site.example",
            "http://site.example@evil.example",
            "http://evil.example#@site.example",
            "site.example",
            "https://allowed.example",
            "http://allowed.example",
            "https://allowed.example:444",
            "//site.example",
            "http://[::1",
            "javascript://site.example",
        ]
    ),
    url_strings,
)


_REFERERS = st.one_of(st.none(), _ORIGINS, _ORIGINS.map(lambda o: o + "/page?x=1"))


@st.composite
def csrf_cases(draw: st.DrawFn) -> tuple[int, list[tuple[bytes, bytes]], str | None, str | None, str | None]:
    route = draw(st.integers(0, len(_POSTS) - 1))
    origin = draw(st.one_of(st.none(), _ORIGINS))
    referer = draw(_REFERERS)
    fetch_site = draw(st.sampled_from([None, "same-origin", "same-site", "cross-site", "none"]))
    headers: list[tuple[bytes, bytes]] = []
    for name, value in ((b"origin", origin), (b"referer", referer), (b"sec-fetch-site", fetch_site)):
        if value is not None:
            headers.append(
                (name, value.encode("utf-8", "surrogateescape")[:300].replace(b"\r", b"").replace(b"\n", b""))
            )
    return route, headers, origin, referer, fetch_site


def _trusted(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if f"{parts.scheme}://{parts.netloc}" == "https://allowed.example":
        return True
    # The site's own pages are served over HTTP(S): the same host under another scheme is not them.
    return parts.scheme in ("http", "https") and parts.netloc.lower() == "site.example"


def test_state_changing_routes_refuse_other_origins(make_gateway: Build) -> None:
    driver, _ = make_gateway(allowed_origins=("https://allowed.example",))

    @HTTP
    @given(csrf_cases())
    def run(case: tuple[int, list[tuple[bytes, bytes]], str | None, str | None, str | None]) -> None:
        route, headers, _, _, fetch_site = case
        path, ctype, body = _POSTS[route]
        reply = driver.request("POST", path, headers=[(b"content-type", ctype), *headers], body=body)
        assert_gateway_reply(reply)
        sent_origin = dict(headers).get(b"origin")
        sent_referer = dict(headers).get(b"referer")
        if sent_origin is not None:
            legit = sent_origin != b"null" and _trusted(sent_origin.decode("utf-8", "surrogateescape"))
        elif sent_referer is not None:
            legit = _trusted(sent_referer.decode("utf-8", "surrogateescape"))
        else:
            legit = True  # no browser sends a cross-site POST with neither header
        if fetch_site == "cross-site":
            legit = False  # a browser said so, whatever the other headers claim
        if legit:
            assert reply.status != 403, (headers, reply.body)
        else:
            assert reply.status == 403, (headers, reply.status)
            assert not reply.header("set-cookie")

    run()


# -- security headers, content types, open redirects ------------------------------------------------


def test_every_gateway_route_sends_security_headers(make_gateway: Build) -> None:
    driver, _ = make_gateway()
    for method, path in [
        ("GET", "/_consent/state"),
        ("GET", "/_consent/"),
        ("GET", "/_consent/receipts"),
        ("GET", "/_consent/healthz"),
        ("GET", "/_consent/static/banner.js"),
        ("GET", "/_consent/static/../settings.py"),
        ("GET", "/_consent/nope"),
        ("DELETE", "/_consent/"),
        ("PUT", "/_consent/collect"),
        ("GET", "/_consent/collect"),
        ("GET", "/_consent/static/.hidden.js"),
        ("HEAD", "/_consent/state"),
    ]:
        reply = driver.request(method, path)
        assert_gateway_reply(reply)
        csp = reply.first("content-security-policy") or ""
        assert "frame-ancestors 'none'" in csp, (path, csp)
        if path != "/_consent/" or method != "GET":
            assert "default-src 'none'" in csp, (path, csp)
    page = driver.request("GET", "/_consent/")
    assert (page.first("content-type") or "").startswith("text/html")
    assert driver.request("GET", "/_consent/state").first("content-type") == "application/json"


def test_form_redirect_never_leaves_the_site(make_gateway: Build) -> None:
    driver, _ = make_gateway()

    @HTTP
    @given(
        st.one_of(url_strings, st.text(alphabet="/\\ \t.:@%2Fexampl", max_size=20), st.none()),
        st.one_of(
            st.none(),
            url_strings,
            st.sampled_from(["http://site.example//evil.example/", "http://site.example/\\evil.example"]),
        ),
    )
    def run(return_to: str | None, referer: str | None) -> None:
        body = "action=reject_all" + ("" if return_to is None else f"&return_to={quote(return_to, safe='')}")
        headers = [(b"content-type", b"application/x-www-form-urlencoded"), *SAME]
        if referer is not None:
            headers.append(
                (b"referer", referer.encode("utf-8", "surrogateescape").replace(b"\r", b"").replace(b"\n", b""))
            )
        reply = driver.request("POST", "/_consent/", headers=headers, body=body.encode())
        assert reply.status in (303, 400, 403), reply.body
        if reply.status == 303:
            location = reply.first("location") or ""
            browser = location.strip(" \x00").replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
            assert browser.startswith("/") and not browser.startswith("//"), location
            assert urlsplit(urljoin("http://site.example/x", browser)).netloc == "site.example", location

    run()


# -- rows actually stored ---------------------------------------------------------------------------

_TOKEN = "Zq7Xw"  # marks every value that must not reach a stored row


@st.composite
def tracked_requests(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 10**6))
    ip = draw(
        st.sampled_from(
            [
                f"203.0.113.{n % 250 + 1}",
                f"2001:db8:{n % 65535:x}:77::{n % 9999 + 1}",
                f"::ffff:198.51.100.{n % 250 + 1}",
            ]
        )
    )
    secret_query = f"email=kim{_TOKEN}{n}%40mail.example&gclid={_TOKEN}G{n}&fbclid={_TOKEN}F{n}&session={_TOKEN}S{n}"
    utm = draw(st.sampled_from(["", "&utm_source=news", "&utm_campaign=spring&utm_medium=mail"]))
    return {
        "ip": ip,
        "query": secret_query + utm,
        "path": draw(st.sampled_from(["/", "/students", f"/u/kim{_TOKEN}@mail.example", "/tel/010-1234-5678/x"])),
        "referer": f"https://ref.example/search?q={_TOKEN}R{n}&gclid={_TOKEN}",
        "ua": draw(
            st.sampled_from(
                [
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/120.0 Safari/537.36",
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
                    "Version/17.0 Mobile/15E148 Safari/604.1",
                    f"Mozilla/5.0 {_TOKEN}UA{n} Firefox/121.0",
                ]
            )
        ),
        "choice": draw(st.sampled_from([None, "accept_all", "reject_all", "analytics_only"])),
        "event": draw(st.booleans()),
    }


def test_stored_rows_hold_no_raw_identifiers(make_gateway: Build, store: Store) -> None:
    driver, _ = make_gateway(trusted_proxies=("10.0.0.0/8",), drop_bots=False)
    consent_ids: set[str] = set()
    raw_ips: set[str] = set()

    @settings(
        max_examples=STORE_CASES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(tracked_requests())
    def run(case: dict[str, Any]) -> None:
        cookie = b""
        if case["choice"]:
            body = (
                {"action": "save", "categories": ["analytics"]}
                if case["choice"] == "analytics_only"
                else {"action": case["choice"]}
            )
            reply = driver.request(
                "POST",
                "/_consent/",
                body=json.dumps(body).encode(),
                headers=[(b"content-type", b"application/json"), *SAME],
            )
            assert reply.status == 200
            cookie = reply.header("set-cookie")[0].split(b";", 1)[0]
            consent_ids.add(json.loads(reply.body)["receipt"]["consent_id"])
        raw_ips.add(case["ip"])
        headers = [
            (b"user-agent", case["ua"].encode()),
            (b"referer", case["referer"].encode()),
            (b"x-forwarded-for", f"{case['ip']}, 10.1.2.3".encode()),
        ]
        if cookie:
            headers.append((b"cookie", cookie))
        reply = driver.request(
            "GET", case["path"], query=case["query"].encode(), headers=headers, client=("10.9.9.9", 1234)
        )
        assert reply.status == 200
        if case["event"]:
            event = {
                "name": "signup" if case["path"] == "/" else "pageview",
                "url": f"https://site.example{case['path']}?{case['query']}",
                "referrer": case["referer"],
            }
            reply = driver.request(
                "POST",
                "/_consent/collect",
                body=json.dumps(event).encode(),
                headers=[*headers, *SAME],
                client=("10.9.9.9", 1234),
            )
            assert reply.status == 202

    run()
    flush(driver, timeout=30.0)
    rows = store.query_dicts(f"SELECT * FROM {store.table('events')}")
    assert len(rows) >= STORE_CASES
    for row in rows:
        # A visitor who granted marketing keeps the campaign's click id (the policy matrix);
        # every other value is checked.
        marketing = bool(row["identified"]) and "marketing" in row["granted"]
        text = json.dumps(
            {k: str(v) for k, v in row.items() if not (marketing and k == "click_id")}, ensure_ascii=False
        )
        assert _TOKEN not in text, row  # no query value, click id, email, referrer path or raw UA
        for cid in consent_ids:
            assert cid not in text
        for ip in raw_ips:
            for key, value in row.items():
                if key != "ip_prefix":
                    assert ip not in str(value), (key, row)
        assert row["ip_prefix"].endswith(("/24", "/48")), row
        assert not str(row["ip_prefix"]).startswith("10."), row  # the visitor, not our proxy
        if not row["identified"]:
            assert row["click_id"] == "" and list(row["granted"]) == []
        if "marketing" not in row["granted"]:
            assert row["click_id"] == ""
    receipts = store.query_dicts(f"SELECT * FROM {store.table('consent_receipts')}")
    for receipt in receipts:
        for ip in raw_ips:
            assert ip not in str(receipt["ip_prefix"]) or str(receipt["ip_prefix"]).startswith(ip + "/")


# -- pages: the banner and the settings page echo the visitor's URL -------------------------------

_MARK = "<x-injected"
_HOSTILE = st.one_of(
    url_strings,
    st.text(alphabet="/\\\"'<>&;:=?#% \tjavascript()x-injected", max_size=40),
    st.sampled_from([f'"><{_MARK[1:]}>', f"'><{_MARK[1:]} a=", "javascript:alert(1)", "//evil.example/%2e%2e"]),
)


def _links(body: str) -> list[str]:
    import html
    import re

    return [html.unescape(m) for m in re.findall(r'(?:href|action|value)="([^"]*)"', body)]


def test_pages_never_echo_markup_or_link_off_site(make_gateway: Build) -> None:
    driver, _ = make_gateway()

    @HTTP
    @given(_HOSTILE, _HOSTILE)
    def run(path: str, query: str) -> None:
        clean_path = "/" + "".join(ch for ch in path if 32 <= ord(ch) < 127).lstrip("/")
        raw_query = quote(query, safe="=&/:'\"<>;").encode("latin-1", "replace")
        for target, q in ((clean_path, raw_query), ("/_consent/", b"return_to=" + quote(path, safe="").encode())):
            reply = driver.request("GET", target, query=q, headers=[(b"accept-language", b"ko")])
            assert reply.status == 200, (target, reply.status)
            body = reply.body.decode("utf-8")
            assert _MARK not in body, (target, q)
            for link in _links(body):
                if link.startswith(("/", "http", "//", "javascript", "\\")):
                    resolved = urlsplit(urljoin("http://site.example/x", link.replace("\\", "/")))
                    assert resolved.netloc == "site.example" and resolved.scheme == "http", (target, link)

    run()


# -- Set-Cookie through the whole middleware -----------------------------------------------------

_CHOICES = [
    {"action": "reject_all"},
    {"action": "accept_all"},
    {"action": "save", "categories": ["analytics"]},
    {"action": "save", "categories": ["preferences", "marketing"]},
    None,  # no choice yet
]


def test_no_refused_cookie_leaves_the_gateway(make_gateway: Build) -> None:
    from consent_gateway.cookies import set_cookie_names

    from .strategies import header_name_case, set_cookie_values

    driver, site = make_gateway()
    runtime = driver.app.runtime
    cookies: list[tuple[bytes, frozenset[str]]] = []
    for choice in _CHOICES:
        if choice is None:
            cookies.append((b"", frozenset({"necessary"})))
            continue
        reply = driver.request(
            "POST",
            "/_consent/",
            body=json.dumps(choice).encode(),
            headers=[(b"content-type", b"application/json"), *SAME],
        )
        pair = next(v.split(b";", 1)[0] for v in reply.header("set-cookie") if v.startswith(b"cg_consent="))
        cookies.append((pair, frozenset(json.loads(reply.body)["categories"])))

    @HTTP
    @given(
        st.integers(0, len(_CHOICES) - 1),
        st.lists(st.tuples(header_name_case, set_cookie_values().map(lambda v: v.encode("latin-1"))), max_size=6),
        st.sampled_from([b"text/html; charset=utf-8", b"application/json", b"TEXT/HTML"]),
    )
    def run(which: int, set_cookies: list[tuple[bytes, bytes]], ctype: bytes) -> None:
        cookie, granted = cookies[which]
        site.headers = [(b"content-type", ctype), *set_cookies]
        reply = driver.request("GET", "/page", headers=[(b"cookie", cookie)] if cookie else [])
        assert reply.status == 200
        for value in reply.header("set-cookie"):
            for name in set_cookie_names(value):
                assert runtime.cookies.category_of(name) in granted, (value, granted)

    run()
