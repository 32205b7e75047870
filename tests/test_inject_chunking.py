"""The injector reads a page the same whether it comes whole or a byte at a time.

A page that arrives whole is read mostly by whole-tag matches (runs of plain tags and text at once);
byte by byte, every tag is read across chunk boundaries. Seeded random pages made of the syntax
that matters (tags of interest, raw-text elements, comments, quotes, stray ``=`` and ``<``) must
come out identical both ways, with the same points found.
"""

from __future__ import annotations

import random

import pytest

from consent_gateway.inject import HtmlInjector

# fmt: off
PIECES = [
    b"<", b">", b"/", b"=", b" ", b"\n", b"\x0c", b"\t", b'"', b"'", b"-", b"!", b"?", b"==", b"a", b"x=",
    b'a="', b"a='", b"b = '", b"head", b"body", b"\xed\x95\x9c",
    b"<!--", b"-->", b"<!doctype html>", b"<!DOCTYPE", b"<?xml",
    b"<head>", b"<body>", b"<BODY class=\"a>b\">", b"</head>",
    b"<html", b"<HTML", b"<head", b"<Head", b"</head", b"</HEAD", b"<body", b"</body", b"<headx", b"<bodyy", b"</headz",
    b"<script", b"</script", b"<title", b"</title", b"<style", b"</style>", b"<textarea", b"<xmp>", b"</xmp",
    b"<iframe", b"<noembed", b"<noframes",
    b"<meta", b"<link", b"<div", b"</div>", b"<p>", b"<a", b"</a", b"</3", b"<3",
    b"<averyveryverylongtagnamethatgoeson",
]
# fmt: on


def read(page: bytes, size: int) -> tuple[bytes, bool, int]:
    injector = HtmlInjector(b"[script]", b"[assets]", lambda start: b"[banner]")
    out = [injector.feed(page[i : i + size]) for i in range(0, len(page), size)]
    out.append(injector.finish())
    return b"".join(out), injector.document, injector.injected


@pytest.mark.parametrize("seed", range(4))
def test_whole_pages_read_as_byte_by_byte(seed: int) -> None:
    rng = random.Random(seed)
    placed = 0
    for _ in range(1500):
        page = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 50)))
        whole = read(page, len(page))
        assert read(page, 1) == whole, page
        assert read(page, rng.randint(2, 9)) == whole, page
        placed += b"[banner]" in whole[0] and not whole[0].endswith(b"[banner]")
    assert placed > 50  # the pages do put the banner after a <body> tag, not only at their end


def test_a_run_of_plain_tags_is_passed_over_up_to_the_point() -> None:
    head = b'<!doctype html><html><head><meta name="a" content="x>y"><link rel=icon href=\'/i\'><meta b = "c">'
    page = head + b'<p class="</head>">t</p></head><body>'
    out, document, _ = read(page, len(page))
    assert document
    assert out == head.replace(b"<head>", b"<head>[script]") + b'<p class="</head>">t</p>[assets]</head><body>[banner]'
