"""Property tests of the pure parsers at the edge, 10,000 generated cases each.

Each test names its property; a failure prints the smallest input hypothesis found.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request

from consent_gateway import Settings
from consent_gateway.banner import safe_return_path
from consent_gateway.consent import Consent, ConsentRecord, ConsentStatus
from consent_gateway.cookies import request_cookie_names, set_cookie_name
from consent_gateway.errors import RequestError
from consent_gateway.middleware import ConsentMiddleware
from consent_gateway.pseudonymize import (
    _EMAIL,
    CLICK_ID_KEYS,
    SaltStore,
    redact_path,
    reduce_user_agent,
    referrer_host,
    split_query,
    split_url,
    truncate_ip,
)
from consent_gateway.records import (
    EVENT_NAME,
    MAX_PROP_KEY,
    MAX_PROP_VALUE,
    MAX_PROPS,
    MAX_URL,
    RawRecord,
    parse_collect_body,
)
from consent_gateway.registry import CategoryRegistry
from consent_gateway.request import RequestFacts
from consent_gateway.rows import RowBuilder
from consent_gateway.runtime import GatewayRuntime
from consent_gateway.signing import COOKIE_SALT, ConsentCodec
from consent_gateway.store import EVENT_COLUMNS

from ..conftest import OLD_SECRET, PSEUDONYM_KEY, REGISTRY, SECRET
from .strategies import (
    PARSER_CASES,
    choice_requests,
    collect_bodies,
    cookie_names,
    cookie_values,
    header_name_case,
    ip_strings,
    latin1_text,
    other_headers,
    set_cookie_values,
    url_strings,
)

MANY = settings(
    max_examples=PARSER_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Extra properties of a parser that already runs PARSER_CASES above.
SOME = settings(MANY, max_examples=max(1, PARSER_CASES // 5))

# A runtime is only constructed, never started: no ClickHouse is opened by these tests.
_SETTINGS = Settings(
    site_id="fuzz",
    data_dir=Path(tempfile.mkdtemp(prefix="cg-fuzz-")),
    secret_keys=(OLD_SECRET, SECRET),
    pseudonym_key=PSEUDONYM_KEY,
    cookie_secure=False,
    cookie_registry=REGISTRY,
)
_RUNTIME = GatewayRuntime(_SETTINGS)
CATEGORIES = ("necessary", "preferences", "analytics", "marketing")


def _consent(granted: frozenset[str]) -> Consent:
    return Consent(ConsentStatus.GIVEN, granted | {"necessary"}, consent_id="c" * 22, version="1.0")


# -- the consent cookie ------------------------------------------------------------------------

_CODEC = ConsentCodec((OLD_SECRET, SECRET), max_age=365 * 86400)
_RECORD = ConsentRecord("AbCdEfGhIjKlMnOpQrStUv", "1.0", ("necessary", "analytics"), "custom", 1_790_000_000)
_GOOD = _CODEC.encode(_RECORD)
_FOREIGN = ConsentCodec(("a-foreign-key-0123456789abcdefghijklmnop",), max_age=10).encode(_RECORD)
_OURS = URLSafeTimedSerializer(SECRET, salt=COOKIE_SALT)
_OTHER_SALT = URLSafeTimedSerializer(SECRET, salt="some.other.purpose")


_PAYLOADS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=70)),
    lambda ch: st.lists(ch, max_size=6),
    max_leaves=10,
)
_FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=70), st.lists(st.text(max_size=40), max_size=40)
)


@st.composite
def cookie_candidates(draw: st.DrawFn) -> tuple[str, str]:
    """(value, kind): tampered copies of a good cookie, foreign ones, random text, and
    payloads of any JSON shape signed with our own key."""
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(latin1_text), "random"
    if kind == 1:
        i = draw(st.integers(0, len(_GOOD) - 1))
        c = draw(st.characters(min_codepoint=32, max_codepoint=126))
        return _GOOD[:i] + c + _GOOD[i + 1 :], "tampered"
    if kind == 2:
        return _GOOD[: draw(st.integers(0, len(_GOOD)))] + draw(st.text(max_size=5)), "tampered"
    if kind == 3:
        return draw(st.sampled_from([_FOREIGN, _OTHER_SALT.dumps(list(_record_payload()))])), "foreign"
    if kind == 4:
        payload = draw(_PAYLOADS)
        return _OURS.dumps(payload), "signed"
    if kind == 5:
        fields = list(_record_payload())
        i = draw(st.integers(0, 4))
        fields[i] = draw(_FIELD_VALUES)
        return _OURS.dumps(fields), "signed"
    return _GOOD * draw(st.integers(2, 20)), "oversized"


def _record_payload() -> tuple[Any, ...]:
    return (_RECORD.consent_id, _RECORD.version, list(_RECORD.categories), "c", _RECORD.issued_at)


@MANY
@given(cookie_candidates())
def test_consent_cookie_never_raises_and_never_accepts_a_forgery(candidate: tuple[str, str]) -> None:
    value, kind = candidate
    verified = _CODEC.decode(value, now=1_790_000_100)
    if verified is None:
        return
    assert kind in ("tampered", "signed"), f"a {kind} or malformed cookie verified: {value!r}"
    record = verified.record
    # Whatever verified is a well-formed record: the codec never hands half-parsed data on.
    assert isinstance(record.consent_id, str) and 16 <= len(record.consent_id) <= 64
    major, minor = record.version.split(".")
    assert major.isdigit() and minor.isdigit()
    assert record.method in ("accept_all", "reject_all", "custom", "gpc")
    assert all(isinstance(c, str) for c in record.categories)
    assert isinstance(record.issued_at, int) and not isinstance(record.issued_at, bool)
    if kind == "tampered":
        # A tampered copy can only verify if it still means exactly the same thing
        # (base64 tails have a few equivalent spellings).
        assert record == _RECORD


def test_consent_cookie_expires_even_when_cached() -> None:
    codec = ConsentCodec((SECRET,), max_age=100)
    value = codec.encode(_RECORD)
    signed = codec.decode(value)
    assert signed is not None
    assert codec.decode(value, now=signed.signed_at + 50) is not None
    assert codec.decode(value, now=signed.signed_at + 101) is None


# -- the Cookie request header -----------------------------------------------------------------


def _field_value(raw: bytes) -> bytes:
    """What an ASGI server can deliver: no control characters other than HTAB."""
    return bytes(b for b in raw if (b >= 32 and b != 127) or b == 9)


_PAIRS = st.lists(st.tuples(cookie_names, cookie_values), max_size=8)
_OTHER_REQUEST_HEADERS = st.lists(
    st.tuples(st.sampled_from([b"user-agent", b"referer", b"x-junk"]), st.binary(max_size=40).map(_field_value)),
    max_size=3,
)


@st.composite
def cookie_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Request headers with one or two Cookie headers, sometimes carrying the consent cookie."""
    pairs = draw(_PAIRS)
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("cg_consent", _GOOD))
    lines = [f"{n}={v}" for n, v in pairs]
    split = draw(st.integers(0, len(lines)))
    sep = draw(st.sampled_from(["; ", ";", " ; "]))
    headers = [(b"cookie", _field_value(sep.join(lines[:split]).encode("latin-1", "replace")))]
    if split < len(lines):
        headers.append((b"cookie", _field_value(sep.join(lines[split:]).encode("latin-1", "replace"))))
    headers += draw(_OTHER_REQUEST_HEADERS)
    random.Random(draw(st.integers(0, 2**32))).shuffle(headers)  # one draw instead of a permutation
    return headers


def _sent_consent_values(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """Values of every pair whose name is exactly cg_consent (whitespace and quotes aside)."""
    out = []
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            name, sep, val = part.partition(b"=")
            if sep and name.strip(b" \t") == b"cg_consent":
                out.append(val.strip(b" \t").strip(b'"').decode("latin-1"))
    return out


@MANY
@given(cookie_headers())
def test_cookie_header_finds_only_the_consent_cookie(headers: list[tuple[bytes, bytes]]) -> None:
    facts = RequestFacts(headers, b"cg_consent")
    sent = _sent_consent_values(headers)
    # Names that merely contain the consent cookie's name (xcg_consent, cg_consent2, " cg_consent*")
    # are never read as it; when one was sent, one of the values sent is the one read.
    if not sent:
        assert facts.consent_cookie is None
    else:
        assert facts.consent_cookie in sent
    for name in request_cookie_names(facts.cookie):
        assert name and name == name.strip(" \t")
        assert name in facts.cookie


@SOME
@given(st.lists(st.tuples(cookie_names, cookie_values), max_size=10), st.frozensets(st.sampled_from(CATEGORIES)))
def test_refused_request_cookies_are_all_expired(pairs: list[tuple[str, str]], granted: frozenset[str]) -> None:
    from consent_gateway.routes import _cookie_headers_for_refused

    # ASGI servers refuse request header values with control characters other than HTAB.
    header = "; ".join(f"{n}={v}" for n, v in pairs).encode("latin-1", "replace")
    header = bytes(b for b in header if (b >= 32 and b != 127) or b == 9)
    facts = RequestFacts([(b"cookie", header)], b"cg_consent")
    granted = granted | {"necessary"}
    deletions = _cookie_headers_for_refused(_RUNTIME, facts, granted)
    deleted = {set_cookie_name(d) for d in deletions}
    for name in request_cookie_names(facts.cookie):
        if name == "cg_consent":
            continue
        found = _RUNTIME.cookies.classify(name)
        # Unclassified names are echoed back in a deletion only up to 128 characters (ten names
        # here stay well under the cap on deletions per answer).
        refused = found.category not in granted and (found.source != "unclassified" or len(name) <= 128)
        assert (name in deleted) == refused, (name, found)
    for value in deletions:
        assert b"Max-Age=0" in value and b"\r" not in value and b"\n" not in value


# -- Set-Cookie filtering -----------------------------------------------------------------------


def browser_cookie_name(value: bytes) -> str:
    """The name a browser stores (RFC 6265bis 5.4): first pair, split at '=', SP/HTAB trimmed;
    a pair without '=' is a cookie with an empty name."""
    pair = value.decode("latin-1").split(";", 1)[0]
    if "=" not in pair:
        return ""
    return pair.split("=", 1)[0].strip(" \t")


def read_back_name(value: bytes) -> str:
    """The name a server reads when the browser sends the cookie back: a cookie stored with an
    empty name is sent as its value alone, so ``=_mk_d=1`` comes back as the cookie ``_mk_d``."""
    pair = value.decode("latin-1").split(";", 1)[0]
    if "=" not in pair or pair.split("=", 1)[0].strip(" \t"):
        return browser_cookie_name(value)
    return pair.split("=", 1)[1].split("=", 1)[0].strip(" \t")


def test_a_nameless_set_cookie_is_judged_by_the_name_it_comes_back_under() -> None:
    # Finding 9: "=_mk_d=1" passed with only preferences granted; browsers send it back as _mk_d=1.
    consent = _consent(frozenset({"necessary", "preferences"}))
    headers = [(b"set-cookie", b"=_mk_d=1; Path=/"), (b"set-cookie", b"=ui_lang=ko; Path=/")]
    out = _MIDDLEWARE._filter_headers(list(headers), consent, None)[0]
    passed = [v for k, v in out if k == b"set-cookie"]
    assert b"=_mk_d=1; Path=/" not in passed
    assert b"=ui_lang=ko; Path=/" in passed


_MIDDLEWARE = ConsentMiddleware(lambda *a: None, runtime=_RUNTIME)  # type: ignore[arg-type, return-value]


@MANY
@given(
    st.lists(
        st.one_of(st.tuples(header_name_case, set_cookie_values().map(lambda v: v.encode("latin-1"))), other_headers),
        max_size=8,
    ),
    st.frozensets(st.sampled_from(CATEGORIES)),
)
def test_no_refused_category_cookie_passes(headers: list[tuple[bytes, bytes]], granted: frozenset[str]) -> None:
    consent = _consent(granted)
    out = _MIDDLEWARE._filter_headers(list(headers), consent, None)[0]
    category_of = _RUNTIME.cookies.category_of
    passed = [v for k, v in out if k.lower() == b"set-cookie"]
    for value in passed:
        # Neither the name the gateway sees nor the name the browser will store is refused.
        assert consent.allows(category_of(set_cookie_name(value))), value
        assert consent.allows(category_of(browser_cookie_name(value))), value
        assert consent.allows(category_of(read_back_name(value))), value
    # Allowed cookies are not lost on the way, and other headers pass untouched and in order.
    for key, value in headers:
        if key.lower() == b"set-cookie":
            if (
                consent.allows(category_of(set_cookie_name(value)))
                and consent.allows(category_of(browser_cookie_name(value)))
                and consent.allows(category_of(read_back_name(value)))
            ):
                assert value in passed
        elif key.lower() != b"vary":
            assert (key, value) in out
    assert sum(1 for k, _ in out if k.lower() == b"vary") == max(1, sum(1 for k, _ in headers if k.lower() == b"vary"))


_REGISTRY = CategoryRegistry(REGISTRY, unknown_category="preferences", cache_size=0)


@SOME
@given(cookie_names)
def test_registry_lookup_matches_exact_names_then_globs(name: str) -> None:
    registry = _REGISTRY
    exact = {p: c for p, c in REGISTRY if not any(ch in p for ch in "*?[")}
    if name in exact:
        expected = exact[name]
    else:
        expected = next(
            (c for p, c in REGISTRY if any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(name, p)), "preferences"
        )
    assert registry.category_of(name) == expected


# -- /collect bodies ------------------------------------------------------------------------------


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@MANY
@given(collect_bodies())
def test_collect_body_is_valid_or_a_4xx(body: bytes) -> None:
    try:
        events = parse_collect_body(body, max_events=50)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        assert exc.message and len(exc.message) < 400
        json.dumps(exc.as_json())  # the error body can always be sent
        return
    assert 1 <= len(events) <= 50
    for event in events:
        assert EVENT_NAME.match(event.name)
        assert isinstance(event.url, str) and 0 < len(event.url) <= MAX_URL and _encodable(event.url)
        assert isinstance(event.referrer, str) and len(event.referrer) <= MAX_URL and _encodable(event.referrer)
        if event.props is not None:
            assert len(event.props) <= MAX_PROPS
            for key, value in event.props.items():
                assert 0 < len(key) <= MAX_PROP_KEY and _encodable(key)
                assert value is None or isinstance(value, bool | int | float | str)
                if isinstance(value, str):
                    assert len(value) <= MAX_PROP_VALUE and _encodable(value)
            json.dumps(event.props, allow_nan=False)


# -- URLs, referrers, user agents, IPs --------------------------------------------------------------


@MANY
@given(ip_strings)
def test_ip_is_truncated_or_dropped(ip: str) -> None:
    prefix = truncate_ip(ip)
    if not prefix:
        return
    network = ipaddress.ip_network(prefix)
    assert network.prefixlen == (24 if network.version == 4 else 48)
    address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    assert address in network


@settings(max_examples=PARSER_CASES, deadline=None, database=None)
@given(
    st.one_of(
        latin1_text,
        st.text(max_size=600),
        st.sampled_from(
            [
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "HeadlessChrome/120.0 Safari/537.36",
                "Googlebot/2.1 (+http://www.google.com/bot.html)",
                "curl/8.4.0",
                "",
            ]
        ),
    )
)
@example("HEADLESS")  # once missed: only HeadlessChrome was known as a headless marker
def test_user_agent_reduces_to_bounded_families(ua: str) -> None:
    agent = reduce_user_agent(ua)
    assert len(agent.browser) <= 40 and len(agent.os) <= 40 and len(agent.browser_version) <= 10
    assert agent.device in ("bot", "tablet", "mobile", "desktop", "other")
    assert agent.browser_version == "" or agent.browser_version.isdigit()
    if "headless" in ua.lower() or ("bot/" in ua.lower() and "googlebot" in ua.lower()):
        assert agent.is_bot
    for text in (agent.browser, agent.os):
        # Only a family name survives, never the raw string when it is longer than a name.
        assert len(ua) <= 40 or text != ua


@MANY
@given(url_strings, st.sampled_from(["", "site.example", "site.example:8080", "SITE.example"]))
def test_referrer_is_reduced_to_a_foreign_host(referrer: str, own: str) -> None:
    host = referrer_host(referrer, own)
    assert host == host.lower() and len(host) <= 253
    assert not any(ch in host for ch in "/?#@")
    if host:
        assert host in referrer.lower()
        assert host != own.split(":", 1)[0].lower()


@MANY
@given(url_strings)
def test_url_splits_into_path_and_query_without_fragment(url: str) -> None:
    path, query = split_url(url)
    assert path and "?" not in path and "#" not in path
    assert "#" not in query
    parts = split_query(query)
    assert all(len(v) <= 200 for v in parts.utm)
    assert not parts.click_id or parts.click_id.split(":", 1)[0] in CLICK_ID_KEYS
    redacted = redact_path(path)
    assert len(redacted) <= 1024 + 64
    for segment in redacted.split("/"):
        assert not _EMAIL.search(unquote(segment)), redacted


@SOME
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["utm_source", "UTM_Medium", "utm_campaign", "gclid", "fbclid", "q", "email", "utm_x", "msclkid"]
            ),
            st.text(alphabet="abcXYZ019@.-_ %+&=", max_size=30),
        ),
        max_size=8,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)
def test_query_keeps_only_utm_values_and_one_click_id(query: str) -> None:
    parts = split_query(query)
    for value in parts.utm:
        assert len(value) <= 200
        assert not _EMAIL.search(value)
    if parts.click_id:
        key = parts.click_id.split(":", 1)[0]
        assert key in CLICK_ID_KEYS


# -- redirects and same-origin --------------------------------------------------------------------


@MANY
@given(st.one_of(url_strings, st.text(alphabet="/\\ \t\r\n.:@%2Fexampl", max_size=20), st.none()))
def test_return_path_never_leaves_the_site(value: str | None) -> None:
    from urllib.parse import urljoin, urlsplit

    path = safe_return_path(value)
    if path is None:
        return
    assert path.startswith("/") and not path.startswith(("//", "/\\"))
    # Browsers drop tabs and newlines and read '\' as '/': none of that may turn it off-site.
    browser_view = path.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert urlsplit(urljoin("https://site.example/here", browser_view)).netloc == "site.example"


# -- /_consent choice bodies (JSON and form) -------------------------------------------------------

_LOOP = asyncio.new_event_loop()


def _choice_request(headers: list[tuple[bytes, bytes]], body: bytes) -> Request:
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)] or [b""]

    async def receive() -> dict[str, Any]:
        if chunks:
            piece = chunks.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/_consent/", "headers": headers, "query_string": b""}
    return Request(scope, receive)


@MANY
@given(choice_requests())
def test_choice_body_is_read_or_a_4xx(case: tuple[list[tuple[bytes, bytes]], bytes, bool]) -> None:
    from consent_gateway.routes import MAX_CHOICE_BODY, _choice_input

    headers, body, _ = case
    try:
        data, form = _LOOP.run_until_complete(_choice_input(_choice_request(headers, body)))
    except RequestError as exc:
        assert exc.status in (400, 413, 415), exc.status
        json.dumps(exc.as_json())
        return
    assert len(body) <= MAX_CHOICE_BODY
    assert isinstance(data, dict)
    if form:
        assert set(data) == {"action", "categories", "locale", "return_to"}
        assert all(isinstance(c, str) for c in data["categories"])
        for key in ("action", "locale", "return_to"):
            assert data[key] is None or isinstance(data[key], str)


# -- raw record → stored row -------------------------------------------------------------------------

_ROWS = RowBuilder(_SETTINGS, SaltStore(_SETTINGS.keys_dir))
_SECRET = "Qv9Kx"  # marks values that must never reach a row
_UAS = st.sampled_from(
    [
        "",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        f"Mozilla/5.0 {_SECRET}-agent Firefox/121.0",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    ]
)


@st.composite
def raw_records(draw: st.DrawFn) -> RawRecord:
    n = draw(st.integers(0, 10**9))
    keep = draw(st.booleans())
    query_parts = [
        f"gclid={_SECRET}g{n}",
        f"fbclid={_SECRET}f{n}",
        f"email={_SECRET}{n}%40mail.example",
        f"q={_SECRET}q{n}",
        draw(st.sampled_from(["", "utm_source=news", "utm_campaign=spring&utm_medium=mail", "utm_term=a%40b.example"])),
        draw(latin1_text).replace(_SECRET[0], ""),
    ]
    random.Random(n).shuffle(query_parts)
    return RawRecord.of(
        kind=draw(st.sampled_from(["visit", "event"])),
        name="pageview",
        category=draw(st.sampled_from(CATEGORIES)),
        action="keep" if keep else "pseudonymise",
        ts=draw(st.floats(min_value=1.7e9, max_value=1.9e9)),
        site="fuzz",
        host=draw(st.sampled_from(["site.example", "site.example:8080", ""])),
        path=draw(st.sampled_from(["/", "/students", f"/u/{_SECRET}{n}@mail.example/x", "/tel/010-1234-5678"])),
        query="&".join(query_parts),
        referrer=draw(st.sampled_from([f"https://ref.example/p/{_SECRET}?q={_SECRET}", "", "garbage", "http://[::1"])),
        user_agent=draw(_UAS),
        ip=draw(ip_strings),
        consent_id=f"{_SECRET}consent{n:012d}" if keep or draw(st.booleans()) else None,
        granted=draw(st.frozensets(st.sampled_from(CATEGORIES))) | {"necessary"},
        props=draw(
            st.sampled_from([None, {}, {"plan": "trial"}, {"mail": "kim@mail.example", "tel": "010-1234-5678", "n": 3}])
        ),
    )


@settings(MANY, max_examples=max(1, PARSER_CASES // 2))
@given(raw_records())
def test_rows_hold_no_raw_identifier(raw: RawRecord) -> None:
    row = orjson.loads(_ROWS.event_lines([raw])[0][0])
    names = [name for name, _ in EVENT_COLUMNS]
    assert len(row) == len(names)
    stored = dict(zip(names, row, strict=True))
    identified = stored["identified"] == 1
    marketing = identified and "marketing" in raw.visitor.granted
    for name, value in stored.items():
        if isinstance(value, str):
            value.encode("utf-8")  # ClickHouse gets valid UTF-8 only
        text = json.dumps(value, default=str, ensure_ascii=False)
        if name == "click_id" and marketing:
            assert text.startswith('"gclid:') or text.startswith('"fbclid:'), text
            continue
        if name == "props" and identified:
            continue  # the visitor's own consented event properties
        assert _SECRET not in text, (name, value)  # consent id, query values, email, referrer path, raw UA
        stripped = raw.visitor.ip.strip()
        # Text columns only: an address made of digits can stand inside a timestamp or a hash by chance.
        if name != "ip_prefix" and len(stripped) > 6 and isinstance(value, str | list):
            assert stripped not in text, (name, value)
    prefix = stored["ip_prefix"]
    assert prefix == "" or prefix.endswith(("/24", "/48"))
    assert "?" not in stored["path"] and "/" not in stored["referrer_host"]
    if not identified:
        assert stored["granted"] == [] and stored["click_id"] == ""
        assert "kim@mail.example" not in stored["props"] and "010-1234-5678" not in stored["props"]
    if raw.consent_id is None or raw.action != "keep":
        assert not identified


# -- the page path's fast searches ----------------------------------------------------------------

# The definitions the fast searches must agree with: case-insensitive tag patterns, and Cookie pairs
# split on ";" and then on the first "=".
_REFERENCE_TAGS = {
    "lang": re.compile(rb"<html[^>]*\blang=[\"']?([A-Za-z]{2})", re.IGNORECASE),
    "head_start": re.compile(rb"<head(\s[^>]*)?>", re.IGNORECASE),
    "head_end": re.compile(rb"</head\s*>", re.IGNORECASE),
    "body_end": re.compile(rb"</body\s*>", re.IGNORECASE),
}
_MARKUP = st.lists(
    st.sampled_from(
        [b"<", b">", b"</", b"html", b"HTML", b"HtMl", b"head", b"HEAD", b"hEaD", b"body", b"BODY", b"lang=",
         b"LANG=", b"Lang='", b'"', b"ko", b"EN", b" ", b"\t", b"\n", b"x", b"\xc3\xa9", b"/", b"</head>",
         b"</body>", b"h", b"H"]
    ),
    max_size=40,
).map(b"".join)


@MANY
@given(_MARKUP)
def test_tag_searches_find_what_case_insensitive_patterns_find(page: bytes) -> None:
    from consent_gateway import banner

    fast = {"lang": banner._LANG_ATTR, "head_start": banner._HEAD_START, "head_end": banner._HEAD_END,
            "body_end": banner._BODY_END}
    for name, reference in _REFERENCE_TAGS.items():
        want = reference.search(page)
        got = fast[name].search(page)
        assert (want and (want.span(), want.groups())) == (got and (got.span(), got.groups())), name
    head = _REFERENCE_TAGS["head_end"].search(page)
    assert banner._head_end(page) == (head.start() if head else -1)
    ends = [m.start() for m in _REFERENCE_TAGS["body_end"].finditer(page)]
    assert banner._last_body_end(page) == (ends[-1] if ends else -1)


_COOKIE_TEXT = st.lists(
    st.sampled_from([b"cg_consent", b"cg_consent2", b"xcg_consent", b"=", b";", b" ", b"\t", b"\x0b", b"\n",
                     b'"', b"abc", b"\xff", b"cg", b"_consent"]),
    max_size=16,
).map(b"".join)


@MANY
@given(_COOKIE_TEXT)
def test_consent_cookie_values_are_those_of_the_split_header(header: bytes) -> None:
    from consent_gateway.request import _cookie_values

    want = []
    for part in header.split(b";"):
        key, sep, value = part.partition(b"=")
        if sep and key.strip() == b"cg_consent":
            want.append(value.strip().strip(b'"').decode("latin-1"))
    assert _cookie_values(header, b"cg_consent") == want
