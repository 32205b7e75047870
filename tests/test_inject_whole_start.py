"""A page whose first chunk holds its usual start (``<head>``, ``</head>``, ``<body>``) is placed in one
match; every page must come out byte for byte as the tag-by-tag scanner makes it.

The scanner is made to read a page by giving it the page's first byte alone (the one match needs
the page's start up to ``<body ...>`` in its first chunk): whatever the chunking, the scanner's
output is the same (tests/test_inject_chunking.py), so the two readings must agree exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from consent_gateway import ConsentGateway, Settings, inject
from consent_gateway.inject import HtmlInjector
from tests.gateway_support import http_scope, run_asgi


def read(page: bytes, sizes: tuple[int, ...] = ()) -> tuple[bytes, bool, int]:
    """The page through an injector, in chunks of ``sizes`` and then the rest, with what it found."""
    injector = HtmlInjector(b"[script]", b"[assets]", lambda start: b"[banner:%d]" % len(start))
    out, at = [], 0
    for size in sizes:
        out.append(injector.feed(page[at : at + size]))
        at += size
    out.append(injector.feed(page[at:]))
    out.append(injector.finish())
    return b"".join(out), injector.document, injector.injected


def scanned(page: bytes) -> tuple[bytes, bool, int]:
    """The page as the tag-by-tag scanner reads it."""
    return read(page, (1,))


@pytest.fixture
def no_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner fails the test if it runs: the page must be placed by the one match."""

    def scan(*args: Any) -> int:
        raise AssertionError("the page went to the scanner")

    monkeypatch.setattr(HtmlInjector, "_scan", scan)


BOM = b"\xef\xbb\xbf"
START = b'<!doctype html>\n<html lang="ko">\n'
# Pages the one match places, each with a trap the scanner steps around.
MATCHED = {
    "demo shape": START
    + b'<head>\n<meta charset="utf-8">\n<title>t</title>\n<link rel="stylesheet" href="/s.css">\n'
    + b'<script src="/a.js" defer></script>\n</head>\n<body>\n<p>x</p></body></html>',
    "</head> in a script string": START
    + b'<head><script>var s = "</head><body>"; if (a <b) {}</script></head><body class="x">y</body>',
    "</head> in a comment": START + b"<head><!-- </head> <body> --><!----><!---></head> --></head><body>y",
    "</head> in an attribute": START
    + b"<head><meta content=\"</head>\" a='<body>' b = \"x>y\"></head><body data-a='>'>",
    "</head> in a title and style": START + b"<head><title></head></title><style>p::after{content:'</head>'}</style>"
    b"</head><body>",
    "cdata": START + b"<head><![CDATA[ x ]]><svg><![CDATA[</head>]]></svg></head><body>",
    "uppercase tags": b"<!DOCTYPE HTML><HTML><HEAD><TITLE>T</TITLE><SCRIPT>x='</HEAD>'</SCRIPT></HEAD ><BODY ID=b>z",
    "byte order mark": BOM + START + b"<head><meta charset=utf-8></head><body>z",
    "charset meta late in head": START + b"<head>" + b"<meta name=x>" * 300 + b'<meta charset="euc-kr"></head><body>',
    "self-closed head and stray text": b"<html><head/>a < b <3 </3 <? pi ?></head><body/>",
    "no html tag": b"<head></head><body>",
    "long tag names": b"<head><averyveryverylongtagnamethatgoeson a=b><scriptandmore></head><body>",
    "textarea and xmp in head": b"<head><textarea></head></textarea><xmp></head></xmp></head>\n<!-- c --><body>",
}
# Pages the one match leaves to the scanner: the scanner must still give what it always gave.
SCANNED = {
    "no head": START + b"<body><p>x</p></body>",
    "no body tag": START + b"<head><title>t</title></head><p>x</p>",
    "a fragment": b"<div>a partial</div>",
    "comment left open": START + b"<head><!-- </head><body>",
    "script left open": START + b"<head><script>var a = '</head><body>'",
    "a second head": START + b"<head><head></head><body>",
    "body before </head>": START + b"<head><body></head>",
    "tag left open": START + b'<head><meta a="</head><body>',
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(MATCHED))
def test_the_one_match_places_what_the_scanner_places(name: str, no_scanner: None) -> None:
    page = MATCHED[name]
    placed = read(page)
    assert placed[0].count(b"[script]") == placed[0].count(b"[assets]") == placed[0].count(b"[banner:") == 1
    assert placed[1]  # a whole document


@pytest.mark.parametrize("name", sorted(MATCHED))
def test_matched_pages_read_the_same_as_scanned(name: str) -> None:
    page = MATCHED[name]
    assert read(page) == scanned(page)
    # A first chunk that ends anywhere: placed at once when it holds <body ...>, scanned otherwise.
    for first in range(2, len(page)):
        assert read(page, (first, 5)) == read(page, (1, first - 1, 5)), first


@pytest.mark.parametrize("name", sorted(SCANNED))
def test_other_pages_still_read_by_the_scanner(name: str) -> None:
    page = SCANNED[name]
    assert read(page) == scanned(page)


def test_the_demo_shape_is_placed_where_the_scanner_places_it() -> None:
    page = MATCHED["demo shape"]
    out, document, injected = read(page)
    head = page.index(b"<head>") + len(b"<head>")
    end = page.index(b"</head>")
    body = page.index(b"<body>") + len(b"<body>")
    banner = b"[banner:%d]" % len(page)
    assert out == page[:head] + b"[script]" + page[head:end] + b"[assets]" + page[end:body] + banner + page[body:]
    assert document and injected == len(b"[script][assets]") + len(banner)


def test_the_banner_sees_the_first_sniff_bytes_of_a_long_first_chunk() -> None:
    page = START + b"<head><title>t</title></head><body>" + b"x" * 5000
    out, _, _ = read(page)
    assert b"[banner:%d]" % inject.SNIFF_BYTES in out
    assert out == scanned(page)[0]


# Pieces of the syntax that matters, put around the three tags so that many pages do match.
PIECES = [
    b"<", b">", b"/", b"=", b" ", b"\n", b'"', b"'", b"-", b"!", b"?", b"a", b"x=", b'a="', b"a='",
    b"<!--", b"-->", b"--->", b"<!-->", b"<!doctype html>", b"<?xml?>", b"<![CDATA[</head>]]>",
    b"<meta charset=utf-8>", b"<title>", b"</title>", b"<script>", b"</script>", b"'</head>'", b"<style>",
    b"</style>", b"<textarea>", b"</textarea>", b"<link rel=a href='x>y'>", b"<div>", b"</div>", b"</3", b"<3",
    b"</ >", b"<HEAD>", b"</HEAD >", b'<Body class="a>b">', b"<html lang=ko>", b"<headx>", b"</headx>",
    b"<bodyy>", BOM, b"<!DOCTYPE", b"<averyveryverylongtagnamethatgoeson>",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_random_pages_read_the_same_both_ways(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    placed_at_once = 0
    whole_start = HtmlInjector._whole_start

    def counted(self: HtmlInjector, chunk: bytes) -> bytes | None:
        nonlocal placed_at_once
        out = whole_start(self, chunk)
        placed_at_once += out is not None
        return out

    monkeypatch.setattr(HtmlInjector, "_whole_start", counted)
    rng = random.Random(seed)

    def some(most: int) -> bytes:
        return b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, most)))

    for _ in range(3000):
        head = rng.choice([b"<head>", b"<HEAD lang='a>'>", b"<head/>", b""])
        end = rng.choice([b"</head>", b"</head x='>'>", b"</head", b""])
        body = rng.choice([b"<body>", b"<BODY a=b>", b"<body", b""])
        page = some(6) + head + some(8) + end + some(3) + body + some(5)
        assert read(page) == scanned(page), page
    assert placed_at_once > 100  # the one match did place a good share of them


# -- a whole page through the gateway --------------------------------------------------------


def raw_page_app(headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """An app that answers every request with exactly these headers and this body, in one message."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    return app


PAGE = MATCHED["demo shape"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (  # no framing header: the headers go on as they came, Vary added
            [(b"content-type", b"text/html; charset=utf-8"), (b"x-a", b"1")],
            [(b"content-type", b"text/html; charset=utf-8"), (b"x-a", b"1"), (b"vary", b"Cookie")],
        ),
        (  # Content-Length anywhere in the list: left out, the others in their order
            [(b"x-a", b"1"), (b"Content-Length", b"%d" % len(PAGE)), (b"content-type", b"text/html"), (b"x-b", b"2")],
            [(b"x-a", b"1"), (b"content-type", b"text/html"), (b"x-b", b"2"), (b"vary", b"Cookie")],
        ),
        (  # a strong ETag becomes weak, a weak one stays
            [(b"content-type", b"text/html"), (b"ETag", b'"v1"'), (b"content-length", b"%d" % len(PAGE))],
            [(b"content-type", b"text/html"), (b"ETag", b'W/"v1"'), (b"vary", b"Cookie")],
        ),
        (
            [(b"etag", b'W/"v2"'), (b"content-type", b"text/html")],
            [(b"etag", b'W/"v2"'), (b"content-type", b"text/html"), (b"vary", b"Cookie")],
        ),
    ],
)
def test_a_whole_page_has_its_framing_headers_changed_as_a_streamed_one(
    make_settings: Callable[..., Settings], given: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]
) -> None:
    gateway = ConsentGateway(raw_page_app(given, PAGE), make_settings())
    sent = run_asgi(gateway, http_scope("/"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["headers"] == expected
    body = sent[1]["body"]
    assert sent[1].get("more_body", False) is False
    assert body.count(b'<div id="cg-root"') == 1 and body.count(b"/static/banner.css") == 1
    # The same page in two messages (the streaming path) comes out the same.
    streamed = run_asgi(ConsentGateway(split_page_app(given, PAGE), make_settings()), http_scope("/"))
    assert streamed[0]["headers"] == expected
    assert b"".join(m.get("body", b"") for m in streamed[1:]) == body


def split_page_app(headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """The same answer with the body in two messages."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body[:200], "more_body": True})
        await send({"type": "http.response.body", "body": body[200:]})

    return app


# -- starts kept from one page to the next ---------------------------------------------------


KEPT = {
    "demo shape",
    "</head> in a title and style",
    "byte order mark",
    "cdata",
    "charset meta late in head",
    "no html tag",
    "self-closed head and stray text",
    "long tag names",
    "textarea and xmp in head",
}


class NoMatch:
    """Stands in for the one match: fails the test if a page is matched again."""

    def match(self, chunk: bytes) -> None:
        raise AssertionError("a kept start was matched again")


@pytest.mark.parametrize("name", sorted(MATCHED))
def test_a_kept_start_places_later_pages_as_the_scanner_does(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    page = MATCHED[name]
    inject._known_starts.clear()
    first = read(page)
    kept = bool(inject._known_starts)
    # Kept when the first "<body" and the next ">" end the match (not for <BODY>, nor when a
    # "<body" in a comment or script comes first).
    assert kept == (name in KEPT)
    tails = (b"", b"<p>more</p>", b"<!-- <head></head><body> -->", b"\x00" * 5000)
    with monkeypatch.context() as patched:
        if kept:
            patched.setattr(inject, "_WHOLE_START", NoMatch())
        later = [read(page + tail) for tail in tails]
    assert later[0] == first
    assert later == [scanned(page + tail) for tail in tails]


def test_only_the_bytes_the_match_read_are_kept() -> None:
    inject._known_starts.clear()
    page = b'<head></head><body class="a>b">x'  # the first ">" after <body is inside its value
    assert read(page) == scanned(page)
    assert inject._known_starts == {}
    page = b"<head><script>'<body>'</script></head><body>x"  # the first <body is in a script
    assert read(page) == scanned(page)
    assert inject._known_starts == {}


def test_kept_starts_are_bounded() -> None:
    inject._known_starts.clear()
    for n in range(inject.START_CACHE_SIZE * 2):
        page = b"<head><title>%d</title></head><body>x" % n
        assert read(page) == scanned(page)
    assert len(inject._known_starts) == inject.START_CACHE_SIZE
    assert b"<head><title>0</title></head><body>" not in inject._known_starts  # the oldest went first
    long_head = b"<head>" + b"<meta name=a>" * 2000 + b"</head><body>"
    assert len(long_head) > inject.START_CACHE_BYTES
    assert read(long_head) == scanned(long_head)
    assert long_head not in inject._known_starts


@pytest.mark.parametrize("seed", range(2))
def test_random_pages_read_the_same_from_a_kept_start(seed: int) -> None:
    rng = random.Random(100 + seed)
    inject._known_starts.clear()
    starts = []
    for _ in range(40):
        start = rng.choice([b"", b"<!doctype html>", b"<html>"]) + b"<head>"
        start += b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))
        starts.append(start + b"</head>" + rng.choice([b"", b"\n", b"<!-- c -->"]) + b"<body>")
    for _ in range(2000):
        page = rng.choice(starts) + b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))
        assert read(page) == scanned(page), page
    assert inject._known_starts  # some starts were kept and served later pages


# -- response starts kept from one response to the next --------------------------------------


def test_a_kept_response_start_never_carries_a_set_cookie_decision(make_settings: Callable[..., Settings]) -> None:
    """The same headers with a marketing Set-Cookie: refused for one visitor, passed for the next."""
    from tests.conftest import SECRET
    from tests.gateway_support import sign_cookie

    headers = [(b"content-type", b"text/html"), (b"set-cookie", b"_mk_px=1; Path=/")]
    gateway = ConsentGateway(raw_page_app(headers, PAGE), make_settings())
    marketing = sign_cookie(SECRET, categories=["necessary", "marketing"])
    for cookie, kept in ((None, False), (marketing, True), (None, False), (marketing, True)):
        request = [(b"cookie", f"cg_consent={cookie}".encode())] if cookie else []
        sent = run_asgi(gateway, http_scope("/", headers=request))
        assert ((b"set-cookie", b"_mk_px=1; Path=/") in sent[0]["headers"]) is kept
    assert gateway._starts == {}


def test_a_kept_response_start_gives_each_response_its_own_headers(make_settings: Callable[..., Settings]) -> None:
    given = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"%d" % len(PAGE)), (b"x-a", b"1")]
    gateway = ConsentGateway(raw_page_app(given, PAGE), make_settings())
    first = run_asgi(gateway, http_scope("/"))
    assert len(gateway._starts) == 1
    first[0]["headers"].append((b"x-changed", b"by a server"))  # what one response's list goes through
    second = run_asgi(gateway, http_scope("/"))
    assert second[0]["headers"] == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"x-a", b"1"),
        (b"vary", b"Cookie"),
    ]
    assert second[1]["body"] == first[1]["body"]


def test_kept_response_starts_are_bounded(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consent_gateway import middleware

    monkeypatch.setattr(middleware, "START_CACHE_SIZE", 4)
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        count += 1
        headers = [(b"content-type", b"text/html"), (b"x-n", b"%d" % count)]
        if count % 3 == 0:
            headers.append((b"x-long", b"a" * middleware.START_CACHE_BYTES))  # too long to keep
        if count % 5 == 0:
            headers.append((b"content-security-policy", b"script-src 'nonce-abcdefgh12345678'"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PAGE})

    gateway = ConsentGateway(app, make_settings())
    for _ in range(20):
        sent = run_asgi(gateway, http_scope("/"))
        assert (b"x-n", b"%d" % count) in sent[0]["headers"]
    kept = gateway._starts
    assert len(kept) == 4
    assert all(b"nonce-" not in value and len(value) < 100 for key in kept for _, value in key)


# -- the cookie inventory's reading of headers -------------------------------------------------


def test_the_inventory_reads_every_cookie_header_and_any_spelling_of_set_cookie(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.support.driver import Driver

    headers = [
        (b"content-type", b"text/html"),
        (b"Set-Cookie", b"palette_session=s; Path=/"),
        (b"SET-COOKIE", b"_mk_px=1; Path=/"),
    ]
    gateway = ConsentGateway(raw_page_app(headers, PAGE), make_settings())
    one = [(b"cookie", b"a_one=1; a_two=2")]
    two = [(b"cookie", b"b_one=1"), (b"user-agent", b"x"), (b"cookie", b"b_two=2; b_one=3")]
    driver = Driver(gateway)
    try:
        for request in (one, one, two, []):  # no consent given: only necessary cookies pass
            sent = driver.run(driver.acall(http_scope("/", headers=request)))
            kept = [value for key, value in sent[0]["headers"] if key.lower() == b"set-cookie"]
            assert kept == [b"palette_session=s; Path=/"]
        rows = {row.name: row for row in gateway.runtime.inventory.drain()}
    finally:
        driver.close()
    requested = {name: row.request_count for name, row in rows.items() if row.request_count}
    assert requested == {"a_one": 2, "a_two": 2, "b_one": 2, "b_two": 1}
    assert rows["a_one"].before_consent == 2  # unknown names count under the unknown cookies' category
    assert (rows["palette_session"].set_count, rows["palette_session"].blocked) == (4, 0)
    assert (rows["_mk_px"].set_count, rows["_mk_px"].blocked) == (4, 4)
