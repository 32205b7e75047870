"""The msgspec fast path of ``parse_collect_body`` against the strict json.loads parser.

The fast path may only say "valid", and then it must return what the strict parser returns; every
other body must get the strict parser's own error. Bodies are written by hand here, so that they
hold what json.dumps never writes: duplicate keys (also spelled with escapes), escaped colons,
NaN and Infinity, integers beyond 64 bits, lone surrogates, odd whitespace, deep nesting.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consent_gateway.errors import RequestError
from consent_gateway.records import _accept_fast, _parse_strict, parse_collect_body

from .strategies import PARSER_CASES, collect_bodies

MAX_EVENTS = 50
CASES = settings(
    max_examples=max(1, PARSER_CASES // 2),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# collect_bodies() already runs PARSER_CASES times through parse_collect_body in test_edge_parsers.
SOME = settings(CASES, max_examples=max(1, PARSER_CASES // 5))


class Raw:
    """A JSON token written as is (NaN, 1e400, a 30-digit integer, a malformed number)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


class Members:
    """A JSON object as its written members, in order, duplicate keys included."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __repr__(self) -> str:
        return f"Members({self.pairs!r})"


_TEXT = st.one_of(
    st.sampled_from(
        ["", "/", "pageview", "a:b", "https://r.example/x?q=1", ":", "::", "\u003a", "\\", '"', "\n", "\x7f",
         "팔레트", "\U0001f600", "\ud800", "\udfff", "\udbff\udbff", "a" * 64, "a" * 65, "b" * 256, "b" * 257]
    ),
    st.text(alphabet=st.sampled_from('ab:/?"\\\x00\n é한\U0001f600\ud800'), max_size=12),
    st.text(max_size=20),
)
_NUMBER = st.one_of(
    st.sampled_from(
        [0, -0, 1, -1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1,
         2**64 - 1, 2**64, 10**30, -(10**30), 0.5, -0.0, 1e300, -1e300, 9007199254740992.0, 9007199254740994.0,
         1e16, 5e-324, 2.2250738585072011e-308]
    ),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "1" * 400, "1" * 5000,
                     "1.0", "1E2", "-0", "-0.0", "01", "1.", ".5", "+1", "0x10", "1e", "--1"]).map(Raw),
)
_SCALAR = st.one_of(_TEXT, _NUMBER, st.booleans(), st.none())
_KEY = st.one_of(st.sampled_from(["name", "url", "referrer", "props", "k", "k:", ":", "x"]), _TEXT)


def _nested(depth: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(Raw("[" * depth + "]" * depth)),
        st.just(Raw('{"a":' * depth + "1" + "}" * depth)),
        st.just(Raw('{"a":' * depth + "1" + "}" * (depth - 1))),
    )


_NESTED = st.sampled_from([1, 2, 3, 100, 1023, 1024, 1025, 5000]).flatmap(_nested)
_VALUE = st.one_of(_SCALAR, _NESTED, st.lists(_SCALAR, max_size=3))
_PROPS = st.lists(st.tuples(_KEY, _VALUE), max_size=22).map(Members)
_NAME = st.one_of(
    st.sampled_from(["pageview", "signup", "ok.name:x-y_z", "a\n", "1bad", "", "a" * 64, "a" * 65]), _TEXT
)


@st.composite
def _events(draw: st.DrawFn) -> Members:
    pairs: list[tuple[str, Any]] = []
    if draw(st.integers(0, 9)) > 0:
        pairs.append(("name", draw(_NAME)))
    for field, value in (("url", _TEXT), ("referrer", _TEXT), ("props", _PROPS)):
        if draw(st.booleans()):
            pairs.append((field, draw(st.one_of(value, st.none(), _VALUE))))
    if draw(st.integers(0, 9)) == 0:
        pairs.append((draw(_KEY), draw(_VALUE)))  # an unknown field, or a duplicate of a known one
    if pairs and draw(st.integers(0, 5)) == 0:
        pairs.insert(draw(st.integers(0, len(pairs))), (pairs[0][0], draw(_VALUE)))  # a duplicate key
    if draw(st.integers(0, 9)) == 0:
        draw(st.randoms(use_true_random=False)).shuffle(pairs)
    return Members(pairs)


_GOOD_TEXT = st.text(alphabet=st.sampled_from("ab:/?=&é한\U0001f600 "), max_size=10)
_GOOD_VALUE = st.one_of(
    _GOOD_TEXT, st.integers(-(2**53), 2**53), st.floats(-1e15, 1e15), st.booleans(), st.none(),
    st.sampled_from([2**53, -(2**53), 2**53 + 1, 2**64, 10**30, 1e300, -0.0]),
)


@st.composite
def _good_events(draw: st.DrawFn) -> Members:
    """Valid events (mostly): each may then get one near miss, a duplicate or an odd value."""
    pairs: list[tuple[str, Any]] = [("name", draw(st.sampled_from(["pageview", "ok.name:x-y_z", "a:b"])))]
    for field in ("url", "referrer"):
        if draw(st.booleans()):
            pairs.append((field, draw(st.one_of(_GOOD_TEXT, st.none()))))
    props: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        props = draw(st.lists(st.tuples(_GOOD_TEXT.filter(bool), _GOOD_VALUE), max_size=5, unique_by=lambda p: p[0]))
        pairs.append(("props", Members(props)))
    draw(st.randoms(use_true_random=False)).shuffle(pairs)
    mutation = draw(st.integers(0, 7))
    if mutation == 0:
        pairs.append((draw(st.sampled_from([k for k, _ in pairs])), draw(_GOOD_VALUE)))
    elif mutation == 1 and props:
        props.insert(draw(st.integers(0, len(props))), (draw(st.sampled_from([k for k, _ in props])), draw(_VALUE)))
    elif mutation == 2:
        props.append((draw(_KEY), draw(_VALUE)))
    return Members(pairs)


_DOCUMENT = st.one_of(
    _events(),
    st.lists(_events(), max_size=5),
    st.tuples(st.lists(_events(), min_size=1, max_size=3), st.integers(48, 52)).map(lambda p: (p[0] * 52)[: p[1]]),
    st.lists(_events(), min_size=1, max_size=1).map(lambda events: events * 50),
    _VALUE,
)
_GOOD_DOCUMENT = st.one_of(
    _good_events(),
    st.lists(_good_events(), min_size=1, max_size=8),
    st.lists(_good_events(), min_size=1, max_size=1).map(lambda events: events * 50),
    st.lists(_good_events(), min_size=1, max_size=1).map(lambda events: events * 51),
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    """A document written with random spacing and random \\u escapes (of ':' too), in UTF-8 mostly."""
    escape_rate = draw(st.sampled_from([0.0, 0.0, 0.05, 0.5]))
    rng = random.Random(draw(st.integers(0, 2**32)))  # one draw: cheap, and replayable from the seed
    spaces = draw(st.sampled_from(["", " ", "\n\t\r "]))

    def space() -> str:
        return spaces[: rng.randint(0, len(spaces))]

    def string(text: str) -> str:
        out = []
        for ch in text:
            code = ord(ch)
            if ch == '"' or ch == "\\" or code < 0x20 or 0xD800 <= code <= 0xDFFF or rng.random() < escape_rate:
                if code > 0xFFFF:
                    code -= 0x10000
                    out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
                else:
                    out.append(f"\\u{code:04{'x' if rng.random() < 0.5 else 'X'}}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def write(value: Any) -> str:
        if isinstance(value, Raw):
            return value.text
        if isinstance(value, Members):
            members = [f"{space()}{string(k)}{space()}:{space()}{write(v)}{space()}" for k, v in value.pairs]
            return "{" + ",".join(members) + "}"
        if isinstance(value, list):
            return "[" + ",".join(space() + write(v) + space() for v in value) + "]"
        if isinstance(value, str):
            return string(value)
        return json.dumps(value)

    # Mostly near-valid documents: a test where every body is refused would prove nothing.
    document = _GOOD_DOCUMENT if rng.random() < 0.6 else _DOCUMENT
    doc = space() + write(draw(document)) + space()
    encoding = draw(st.sampled_from(["utf-8"] * 8 + ["utf-8-sig", "utf-16"]))
    return doc.encode(encoding, "surrogatepass")


def _outcome(parse: Any, body: bytes) -> tuple[str, Any]:
    try:
        events = parse(body)
    except RequestError as exc:
        return "error", (exc.status, exc.message, exc.field)
    # repr tells 1 from 1.0 and True, and -0.0 from 0.0.
    return "events", repr(events)


def _check(body: bytes) -> None:
    strict = _outcome(lambda b: _parse_strict(b, MAX_EVENTS), body)
    assert _outcome(lambda b: parse_collect_body(b, max_events=MAX_EVENTS), body) == strict
    fast = _accept_fast(body, MAX_EVENTS)
    if fast is not None:
        assert strict == ("events", repr(fast))


@CASES
@given(_bodies())
@example(b'{"name":"a","name":"b"}')
@example(b'{"name":"a:b","url":"x:y","props":{"k":"v:","k":1}}')
@example(b'{"name":"a","props":{"x":{"y":1}},"props":{"k":"v"}}')
@example(b'{"name":"a","url":"\\u003a","url":"b"}')
@example(b'{"name":"a","url":"\\u003A","u\\u0072l":"b"}')
@example(b'{"name":"a","props":{"v":123456789012345678901234567890}}')
@example(b'{"name":"a","props":{"v":18446744073709551616}}')
@example(b'{"name":"a","props":{"v":-9223372036854775809}}')
@example(b'{"name":"a","props":{"v":9007199254740993}}')
@example(b'{"name":"a","props":{"v":1e400}}')
@example(b'{"name":"a","props":{"v":NaN}}')
@example(b'{"name":"a","url":"\\ud800"}')
@example(b'{"name":"a","url":"\xed\xa0\x80"}')
@example(b'\xef\xbb\xbf{"name":"a"}')
@example(b'[{"name":"a"},{"name":""},{"name":"a"}]')
@example(b'{"name":"a\\n"}')
@example(b'{"name":""}')
def test_fast_path_agrees_with_the_strict_parser(body: bytes) -> None:
    _check(body)


@SOME
@given(collect_bodies())
def test_fast_path_agrees_on_the_hostile_bodies(body: bytes) -> None:
    _check(body)


def test_bodies_a_tracker_sends_take_the_fast_path() -> None:
    event = {"name": "portfolio_view", "url": "/portfolio?utm_source=newsletter", "referrer": "https://search.example/",
             "props": {"run": "r1", "work": "sunset-hills", "n": 3, "ok": True, "x": None, "f": 0.25, "ko": "팔레트"}}
    for doc in (event, [event] * 50, {"name": "pageview"}, [{"name": "a:b", "url": None, "referrer": None}]):
        for body in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False, indent=1).encode()):
            fast = _accept_fast(body, MAX_EVENTS)
            assert fast is not None, body
            assert fast == _parse_strict(body, MAX_EVENTS)
