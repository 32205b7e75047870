"""Hypothesis strategies for hostile input: header bytes, cookie names, URLs, JSON documents."""

from __future__ import annotations

import json
import os
import random
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# Every generated test in this suite runs at least this many cases against a pure parser.
PARSER_CASES = int(os.environ.get("CG_FUZZ_CASES", "10000"))

latin1_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
any_text = st.text(max_size=120)
# Strings that can carry lone surrogates, as JSON's \udXXX escapes can.
surrogate_text = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)

REGISTERED = ["palette_session", "ui_lang", "_pa_id", "_pa_js", "_mk_x", "_mk_", "_mk_campaign", "cg_consent"]
GLOBBY = ["_mk_*", "_mk_?", "_mk_[a]", "*", "?", "[", "[!a]", "_pa_*", "palette_session*", "*_session", "_MK_x"]

cookie_names = st.one_of(
    st.sampled_from(REGISTERED + GLOBBY),
    st.text(alphabet="_-.abcmkpxyz*?[]!AZ09", min_size=0, max_size=16),
    latin1_text.map(lambda t: t.replace(";", "").replace("=", "")[:24]),
)
# Whitespace a server might or might not strip: SP/HTAB (RFC 6265) and what Python's strip() adds.
padding = st.sampled_from(["", " ", "\t", "  ", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", " \xa0"])
cookie_values = st.one_of(
    st.just(""),
    st.text(alphabet="abcXYZ0129-_.%/+", max_size=20),
    st.text(alphabet="abcXYZ0129-_.%/+", max_size=20).map(lambda v: f'"{v}"'),
    latin1_text.map(lambda t: t.replace(";", "")[:30]),
)
attributes = st.lists(
    st.sampled_from(
        [
            "Path=/",
            "Domain=site.example",
            "Max-Age=3600",
            "Expires=Wed, 21 Oct 2037 07:28:00 GMT",
            "HttpOnly",
            "Secure",
            "SameSite=None",
            "SameSite=Lax",
            "Partitioned",
            "Priority=High",
            "_mk_x=1",
            "palette_session=1",
            "",
            " ",
            "=",
            'Comment="a;b"',
        ]
    ),
    max_size=5,
)


@st.composite
def set_cookie_values(draw: st.DrawFn) -> str:
    """A Set-Cookie header value, well-formed or not."""
    name = draw(cookie_names)
    shape = draw(st.sampled_from(["pair", "pair", "pair", "no_equals", "raw"]))
    if shape == "raw":
        return draw(latin1_text)
    before, after = draw(padding), draw(padding)
    pair = f"{before}{name}{after}" if shape == "no_equals" else f"{before}{name}{after}={draw(cookie_values)}"
    attrs = draw(attributes)
    return "; ".join([pair, *attrs]) if attrs else pair


header_name_case = st.sampled_from([b"set-cookie", b"Set-Cookie", b"SET-COOKIE", b"sEt-CoOkIe"])
other_headers = st.sampled_from(
    [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"Content-Type", b"application/json"),
        (b"vary", b"Accept-Encoding"),
        (b"Vary", b"*"),
        (b"cache-control", b"no-store"),
        (b"x-set-cookie", b"_mk_x=1"),
        (b"set-cookie2", b"_mk_x=1"),
    ]
)


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Small JSON values hypothesis can shrink; the large ones come from ``random_json``."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=max_leaves,
    )


# Built once: a strategy made inside a composite on every draw costs hypothesis a source lookup.
JSON_SMALL = json_values(2)
JSON_MEDIUM = json_values(3)
JSON_ANY = json_values()

_ODD_TEXT = [
    "",
    " ",
    "\u0000",
    "é",
    "한글",
    "\U0001f600",
    "\u202e",
    "\ufeff",
    "a@b.example",
    "010-1234-5678",
    "/p?gclid=1",
    "https://evil.example/",
    "\\",
    '"',
    "\n",
    "null",
    "__proto__",
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any shape and size, drawn from ``rng`` (cheap to generate in bulk)."""
    roll = rng.random()
    if depth > 6 or roll < 0.45:
        kind = rng.randrange(9)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice([0, -1, 2**53, 2**53 + 1, -(2**63), 2**64, 10**30, rng.randrange(-1000, 1000)])
        if kind == 3:
            return rng.choice([0.0, -0.0, 1e308, -1e-308, 3.14, rng.uniform(-1e9, 1e9)])
        if kind == 4:
            return rng.choice(_ODD_TEXT) * rng.choice([1, 1, 2, 70, 300, 3000])
        if kind == 5:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 40)))
        return rng.choice(["pageview", "signup", "portfolio_view", "/", "/a/b", "x" * 64, "x" * 65, "9lives"])
    # Wide containers only at the top, so documents stay kilobytes, not megabytes.
    wide = depth == 0
    if roll < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 51] if wide else [0, 1, 2]))]
    keys = ["name", "url", "referrer", "props", "k", "", "n" * 65] + [rng.choice(_ODD_TEXT) for _ in range(2)]
    size = rng.choice([0, 1, 2, 4, 21] if wide else [0, 1, 2])
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(size)}


def random_event(rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {"name": rng.choice(["pageview", "signup", "portfolio_view", "ok.name:x-y_z"])}
    for field in ("url", "referrer", "props"):
        if rng.random() < 0.5:
            event[field] = (
                random_json(rng, 5)
                if rng.random() < 0.3
                else {
                    "url": lambda: rng.choice(
                        ["/", "/a?utm_source=x&gclid=1", "https://site.example/p#f", "/" + "a" * 2100]
                    ),
                    "referrer": lambda: rng.choice(["", "https://google.com/search?q=me", "garbage", "http://[::1"]),
                    "props": lambda: {f"k{i}": random_json(rng, 6) for i in range(rng.choice([0, 1, 3, 20, 21]))},
                }[field]()
            )
    if rng.random() < 0.05:
        event[rng.choice(_ODD_TEXT)] = 1
    return event


@st.composite
def collect_bodies(draw: st.DrawFn) -> bytes:
    """/collect bodies: events, lists of events, raw JSON, NaN, duplicates, deep nesting, bytes."""
    kind = draw(st.integers(0, 9))
    rng = random.Random(draw(st.integers(0, 2**32)))  # one draw: cheap, and replayable from the seed
    if kind <= 2:
        doc = json.dumps(random_event(rng), ensure_ascii=rng.random() < 0.5)
    elif kind == 3:
        doc = json.dumps(
            {
                k: draw(JSON_ANY)
                for k in draw(st.lists(st.sampled_from(["name", "url", "referrer", "props", "x"]), unique=True))
            }
        )
    elif kind == 4:
        doc = json.dumps([random_event(rng) for _ in range(rng.choice([0, 1, 2, 49, 50, 51, 200]))])
    elif kind == 5:
        doc = json.dumps(random_json(rng))
    elif kind == 6:
        depth = rng.choice([1, 2, 50, 999, 1000, 5000, 100_000])
        doc = "[" * depth + "]" * rng.choice([0, depth])
    elif kind == 7:
        token = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000, "-0", "1E400"])
        doc = '{"name":"pageview","props":{"v":' + token + "}}"
    elif kind == 8:
        doc = _duplicate_keys(json.dumps(random_event(rng)))
        if rng.random() < 0.5:
            doc = doc.replace('"name"', '"\\u006eame"', 1)  # the same key, escaped
    else:
        return draw(st.binary(max_size=200))
    # Lone surrogates as JSON escapes (valid JSON text, invalid Unicode) in an otherwise valid event.
    if rng.random() < 0.15:
        escape = rng.choice(["\\ud800", "\\udfff", "\\udbff\\udbff"])
        doc = rng.choice(
            [
                '{"name":"pageview","url":"/a' + escape + '"}',
                '{"name":"pageview","referrer":"https://r.example/' + escape + '"}',
                '{"name":"pageview","props":{"k' + escape + '":1}}',
                '[{"name":"pageview"},{"name":"pageview","props":{"k":"v' + escape + '"}}]',
            ]
        )
    encoding = rng.choice(["utf-8", "utf-8", "utf-8", "utf-16", "utf-8-sig"])
    return doc.encode(encoding, "surrogatepass")


def _duplicate_keys(doc: str) -> str:
    return doc.replace("{", '{"name":"dup",', 1) if doc.startswith("{") else doc


ip_strings = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"{a}%eth0"),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses().map(lambda a: f" {a} "),
    latin1_text,
)

url_strings = st.one_of(
    any_text,
    st.builds(
        lambda scheme, host, path, query, frag: f"{scheme}{host}{path}{query}{frag}",
        st.sampled_from(["https://", "http://", "//", "", "javascript:", "HTTPS://", "ftp://"]),
        st.sampled_from(
            ["site.example", "evil.example", "[::1", "[::1]:99", "user:pw@h.example", "h.example:99999", ""]
        ),
        st.text(alphabet="/abc@.0123456789-%", max_size=40),
        st.sampled_from(["", "?", "?a=1", "?gclid=XYZ&utm_source=nl", "?utm_source=a%40b.example", "?q=%ZZ"]),
        st.sampled_from(["", "#frag", "#?gclid=1"]),
    ),
)


_ACTIONS = st.sampled_from(["accept_all", "reject_all", "save", "", "ACCEPT_ALL", "withdraw", None])
_CATEGORY = st.sampled_from(["necessary", "preferences", "analytics", "marketing", "", "x" * 40, "Marketing"])
_CATEGORIES_FIELD = st.one_of(st.lists(_CATEGORY, max_size=5), _CATEGORY, JSON_MEDIUM)
_RETURN_TO_FIELD = st.one_of(url_strings, JSON_SMALL)
_LOCALE_FIELD = st.one_of(st.sampled_from(["ko", "en", "fr"]), JSON_SMALL)
_FORM_ACTION = st.one_of(_ACTIONS.map(str), latin1_text)


@st.composite
def choice_requests(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], bytes, bool]:
    """(headers, body, chunked) of a POST to the choice route, JSON or form, valid or not."""
    kind = draw(st.integers(0, 6))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind <= 1:
        doc: Any = {"action": draw(_ACTIONS)}
        if draw(st.booleans()):
            doc["categories"] = draw(_CATEGORIES_FIELD)
        if draw(st.booleans()):
            doc["return_to"] = draw(_RETURN_TO_FIELD)
        if draw(st.booleans()):
            doc["locale"] = draw(_LOCALE_FIELD)
        body = json.dumps(doc).encode()
        ctype = b"application/json"
    elif kind == 2:
        body = json.dumps(random_json(rng)).encode("utf-8", "surrogatepass")
        ctype = rng.choice([b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON"])
    elif kind <= 4:
        fields = [("action", draw(_FORM_ACTION))]
        fields += [("categories", c) for c in draw(st.lists(_CATEGORY, max_size=4))]
        if draw(st.booleans()):
            fields.append(("return_to", draw(url_strings)))
        if draw(st.booleans()):
            junk = "".join(chr(rng.randrange(32, 0x3000)) for _ in range(40))
            fields += [
                (junk[: rng.randrange(6)], junk[rng.randrange(40) :]) for _ in range(rng.choice([1, 10, 63, 64, 70]))
            ]
        body = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in fields).encode()
        if draw(st.integers(0, 5)) == 0:
            body = draw(st.binary(max_size=100)) + body
        ctype = b"application/x-www-form-urlencoded"
    elif kind == 5:
        body = b'--x\r\nContent-Disposition: form-data; name="action"\r\n\r\naccept_all\r\n--x--\r\n'
        ctype = draw(st.sampled_from([b"multipart/form-data; boundary=x", b"multipart/form-data"]))
    else:
        body = draw(st.binary(max_size=300))
        ctype = draw(st.sampled_from([b"", b"text/plain", b"application/xml", b"application/json", b"\xff\xfe"]))
    headers = [(b"content-type", ctype)] if ctype else []
    headers.append((b"origin", b"http://site.example"))
    length = draw(st.sampled_from(["right", "right", "right", "none", "huge", "junk"]))
    if length == "right":
        headers.append((b"content-length", str(len(body)).encode()))
    elif length == "huge":
        headers.append((b"content-length", draw(st.sampled_from([b"99999999999999999999", b"9" * 5000, b"16385"]))))
    elif length == "junk":
        headers.append(
            (b"content-length", draw(st.sampled_from([b"\xb2", b"\xb9\xb3", b"-1", b"+5", b" 5", b"0x10", b""])))
        )
    if draw(st.integers(0, 4)) == 0:
        body += b"x" * draw(st.sampled_from([16_000, 20_000, 100_000]))  # more than declared or allowed
    return headers, body, length != "right"
