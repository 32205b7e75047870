"""Streaming, HTML-aware insertion of the banner into a page as its body passes through.

The injector reads the page's bytes as they arrive and passes them on at once, except for the few
bytes of a tag name or comment marker cut by a chunk boundary (at most ``MAX_CARRY`` bytes). It
tracks just enough of the HTML tokenizer to find the three injection points where a browser would:

- the Google Consent Mode script right after the ``<head ...>`` start tag;
- the banner's stylesheet and script before ``</head>`` (or before ``<body ...>`` without one);
- the no-JavaScript banner right after the ``<body ...>`` start tag.

Nothing is ever inserted inside ``<script>``, ``<style>``, ``<textarea>`` and the other raw-text
elements, inside comments, or inside a tag and its attribute values. What could not be placed (a
page without ``<head>`` or ``<body>`` tags) is appended at the end, but only to a whole document:
a body without any ``<!doctype>``, ``<html>``, ``<head>`` or ``<body>`` is a fragment (an htmx
partial, say) and is left exactly as it came.

The bytes scanned are the page's own, in its charset: every charset this is used with is
ASCII-compatible (``charset_of`` refuses the others), so tag syntax reads the same in all of them.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from functools import lru_cache

# An unfinished "</textarea" or "<!--" cut at a chunk's end is held back until the next chunk.
MAX_CARRY = 16
# Where the charset and the page's language are looked for (the HTML spec's prescan reads 1024).
SNIFF_BYTES = 2048
# Elements whose content is text up to their own end tag: no tag, comment or injection point inside.
_RAW_TEXT = frozenset({b"script", b"style", b"textarea", b"title", b"xmp", b"iframe", b"noembed", b"noframes"})
_NAME_END = b" \t\n\r\x0c/>"
_SPACE = b" \t\n\r\x0c"
_TAG_STOP = re.compile(rb"[>\"']")
# A tag's attributes up to and including its ">", read as ``HtmlInjector._read_tag`` reads them: a
# quote opens a value only right after "=" (spaces between), any other quote is a stray byte. It
# matches only a tag that ends in the data at hand; anything else is left to the byte-wise reading.
# Atomic and possessive throughout, so a tag that does not end never makes the engine backtrack.
# Written as a run of plain bytes, then each value or stray quote followed by its run: the pieces
# start with distinct bytes, so this reads exactly as one loop over the three would, in fewer steps.
_ATTRIBUTES = rb"[^\"'>=]*+(?:(?:=[ \t\n\r\x0c]*+(?:\"[^\"]*+\"|'[^']*+'|(?![ \t\n\r\x0c\"']))|[\"'])[^\"'>=]*+)*+>"
_TAG_END = re.compile(_ATTRIBUTES)
# Text and whole elements that hold no injection point and change no state: any start tag but
# html, head and body, any end tag but </head>, and a raw-text element (<script>, <title>, ...) read
# whole up to its end tag. One match passes over the run of <meta>, <link>, <title>, <script> and
# the text between them that makes up most of a page before its <body>.
_NAME = rb"[A-Za-z][^ \t\n\r\x0c/>]{0,%d}+" % MAX_CARRY
_NAME_ENDS = rb"[ \t\n\r\x0c/>]"
_SPECIAL = sorted(_RAW_TEXT | {b"html", b"head", b"body"})
# The first letters of those names, either case: a tag that starts otherwise (<meta>, <link>, <p>)
# is a plain one without looking further.
_SPECIAL_FIRST = bytes(sorted({name[0] for name in _SPECIAL} | {name[0] - 32 for name in _SPECIAL}))


def _raw_element(name: bytes) -> bytes:
    named = rb"(?i:%s)" % name
    return rb"<%s(?=%s)%s[^<]*+(?:<(?!/%s%s)[^<]*+)*+</%s%s" % (
        named,
        _NAME_ENDS,
        _ATTRIBUTES,
        named,
        _NAME_ENDS,
        named,
        _ATTRIBUTES,
    )


# One tag or element of those (text aside). Each alternative starts differently from the others
# (a plain start tag, an end tag, a start tag that only begins like a special one, a raw-text
# element), so their order changes nothing but how soon the usual ones are tried.
_PLAIN_TAG = rb"<(?![%s!?/])%s%s|</(?!(?i:head)%s)%s%s|<(?=[%s])(?!(?i:%s)%s)%s%s|%s" % (
    _SPECIAL_FIRST,
    _NAME,
    _ATTRIBUTES,
    _NAME_ENDS,
    _NAME,
    _ATTRIBUTES,
    _SPECIAL_FIRST,
    b"|".join(_SPECIAL),
    _NAME_ENDS,
    _NAME,
    _ATTRIBUTES,
    b"|".join(_raw_element(name) for name in sorted(_RAW_TEXT)),
)
_PLAIN = re.compile(rb"[^<]*+(?:(?:%s)[^<]*+)*+" % _PLAIN_TAG)
# What else the scanner passes over without placing anything, each read as it reads it: a comment
# up to the first "-->" after its "<!--", a declaration or "<?" up to its ">", and a "<" that opens
# no tag (not before a letter, "!", "?" or "/letter"), which is text.
_PASSED_TAG = rb"%s|<!--[^-]*+(?:-(?!->)[^-]*+)*+-->|<!(?!--)[^>]*+>|<\?[^>]*+>|<(?![A-Za-z!?]|/[A-Za-z])" % _PLAIN_TAG
_PASSED = rb"[^<]*+(?:(?:%s)[^<]*+)*+" % _PASSED_TAG


def _tag(name: bytes, closing: bool = False) -> bytes:
    return rb"<%s(?i:%s)(?=%s)%s" % (b"/" if closing else b"", name, _NAME_ENDS, _ATTRIBUTES)


# The usual start of a page in one match: anything passed over (and <html>), then <head ...>, its
# content, </head>, and whatever passes up to <body ...>. The empty groups mark the places the
# scanner would find: after <head ...> (1) and before </head> (2); the banner goes at the match's
# end. A page of another shape (no head, a second <head>, a comment or raw text left open) does not
# match and is read by the scanner.
_WHOLE_START = re.compile(
    rb"[^<]*+(?:(?:%s|%s)[^<]*+)*+%s()%s()%s%s%s"
    % (_PASSED_TAG, _tag(b"html"), _tag(b"head"), _PASSED, _tag(b"head", closing=True), _PASSED, _tag(b"body"))
)
# A site sends the same start, up to <body ...>, on page after page: a start the one match has read
# is kept with its points, and a first chunk that begins with it has them without matching again.
# The match reads nothing past its last ">" (every look-ahead in it stays inside), so a page that
# begins with a kept start is read the same, whatever follows. At most START_CACHE_SIZE starts of
# at most START_CACHE_BYTES each are kept (1 MiB in all), the oldest going first.
START_CACHE_SIZE = 64
START_CACHE_BYTES = 16 * 1024
_known_starts: dict[bytes, tuple[int, int, int]] = {}


def _start_points(chunk: bytes) -> tuple[int, int, int] | None:
    """Where the head script, the assets and the banner go when ``chunk`` holds the page's usual
    start (after ``<head ...>``, before ``</head>``, after ``<body ...>``); None otherwise."""
    at = chunk.find(b"<body")  # the usual spelling; any other is read by the match alone
    end = chunk.find(b">", at) + 1 if at >= 0 else 0
    key = chunk[:end] if 0 < end <= START_CACHE_BYTES else b""
    if key:
        known = _known_starts.get(key)
        if known is not None:
            return known
    found = _WHOLE_START.match(chunk)
    if found is None:
        return None
    points = found.start(1), found.start(2), found.end()
    if key and points[2] == end:  # the start is exactly the bytes the match read
        while len(_known_starts) >= START_CACHE_SIZE:
            try:
                del _known_starts[next(iter(_known_starts))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break
        _known_starts[key] = points
    return points


def place_at_start(
    chunk: bytes, head_script: bytes, assets: bytes, banner: Callable[[bytes], bytes]
) -> tuple[bytes, bytes] | None:
    """``chunk`` with the head script, assets and banner in place, and the banner, when the chunk
    holds the page's usual start up to its ``<body ...>`` tag; None when only ``HtmlInjector`` can
    read it. The output is what ``HtmlInjector`` gives for a page whose first chunk this is.
    """
    points = _start_points(chunk)
    if points is None:
        return None
    after_head, before_end, after_body = points
    made = banner(chunk[:SNIFF_BYTES])  # from the page's first bytes, as HtmlInjector.banner
    out = b"".join(
        (
            chunk[:after_head],
            head_script,
            chunk[after_head:before_end],
            assets,
            chunk[before_end:after_body],
            made,
            chunk[after_body:],
        )
    )
    return out, made


_LETTERS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
_HEADER_CHARSET = re.compile(rb";\s*charset\s*=\s*[\"']?([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
# Labels the WHATWG Encoding Standard maps to a codec Python names differently.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "windows-949": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "x-sjis": "shift_jis",
    "latin1": "cp1252",
    "iso-8859-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}
_DATA, _TAG, _COMMENT, _DECLARATION, _RAW = range(5)


class UnsupportedCharset(ValueError):
    """The page declares a charset the banner cannot be written in without breaking the page."""


def charset_of(content_type: bytes) -> str | None:
    """The Python codec for a Content-Type's ``charset=``, None without one.

    Raises ``UnsupportedCharset`` for charsets that are not ASCII-compatible (UTF-16, UTF-32):
    a page in one of those is passed on without a banner.
    """
    # A site sends the same few Content-Type values on every page: those are read once.
    if type(content_type) is bytes and len(content_type) <= _CONTENT_TYPE_CACHE_BYTES:
        return _cached_charset(content_type)
    return _charset(content_type)


def _charset(content_type: bytes) -> str | None:
    found = _HEADER_CHARSET.search(content_type)
    return None if found is None else _codec(found.group(1))


_CONTENT_TYPE_CACHE_BYTES = 128
_cached_charset = lru_cache(maxsize=64)(_charset)


def _codec(label: bytes) -> str:
    text = label.decode("ascii", "replace").strip().lower()
    name = _CHARSET_ALIASES.get(text, text)
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return "ascii"  # an unknown label: markup as ASCII with references reads right in any of them
    if codec.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
        raise UnsupportedCharset(f"charset {text!r} is not ASCII-compatible; the banner is left out of such pages")
    return codec


def meta_charset(head: bytes) -> str | None:
    """The codec a ``<meta charset>`` or ``http-equiv`` Content-Type in the page's first bytes names."""
    found = _META_CHARSET.search(head, 0, 1024)
    if found is None:
        return None
    try:
        return _codec(found.group(1))
    except UnsupportedCharset:
        return "utf-8"  # the HTML spec reads a <meta> claiming UTF-16 as UTF-8


def encode_markup(text: str, codec: str | None) -> bytes:
    """``text`` in the page's charset; characters it cannot hold become numeric character references."""
    return text.encode(codec or "ascii", "xmlcharrefreplace")


class HtmlInjector:
    """Feeds a page through in chunks and returns what to send on, with the banner in place.

    ``head_script`` (Google Consent Mode's, or empty) and ``assets`` are ASCII with character
    references, right in any charset the injector is used with; ``banner`` is called once, when
    the banner's place is found, with the page's first bytes (at most ``SNIFF_BYTES``) so it can
    follow the page's language and charset.
    """

    __slots__ = (
        "_assets",
        "_banner",
        "_carry",
        "_done_assets",
        "_done_banner",
        "_done_head_script",
        "_head_script",
        "_last",
        "_make_banner",
        "_quote",
        "_raw_end",
        "_sniff",
        "_state",
        "_tag_kind",
        "document",
        "injected",
    )

    def __init__(self, head_script: bytes, assets: bytes, banner: Callable[[bytes], bytes]) -> None:
        self._head_script = head_script
        self._assets = assets
        self._make_banner = banner
        self._banner: bytes | None = None
        self._sniff = bytearray()
        self._carry = b""
        self._state = _DATA
        self._quote = 0  # the quote byte of an attribute value being read, 0 outside one
        self._last = 0  # the last non-space byte of a tag, to tell a value's quote from a stray one
        self._tag_kind = b""  # the interesting tag being read: b"head", b"body", b"</head", a raw-text name
        self._raw_end = b""  # "</script" while inside <script>, and so on
        self._done_head_script = False
        self._done_assets = False
        self._done_banner = False
        self.document = False  # a doctype, <html>, <head> or <body> was seen: a whole page
        self.injected = 0  # bytes of markup inserted so far

    def __repr__(self) -> str:
        return f"HtmlInjector(state={self._state}, document={self.document}, injected={self.injected})"

    @property
    def banner(self) -> bytes:
        """The banner in the page's charset, made on first use from the page's first bytes."""
        if self._banner is None:
            self._banner = self._make_banner(bytes(self._sniff))
        return self._banner

    def feed(self, chunk: bytes) -> bytes:
        """The part of the page that can go on now, with whatever markup belongs in it."""
        if self._done_banner and self._done_assets and not self._carry:
            return chunk  # every point is placed: the rest of the page passes as it is
        if not self._sniff and chunk:
            placed = self._whole_start(chunk)
            if placed is not None:
                return placed
        if len(self._sniff) < SNIFF_BYTES:
            self._sniff += chunk[: SNIFF_BYTES - len(self._sniff)]
        data = self._carry + chunk if self._carry else chunk
        out: list[bytes] = []
        self._carry = data[self._scan(data, out, final=False) :]
        return b"".join(out)

    def _whole_start(self, chunk: bytes) -> bytes | None:
        """The first chunk with every point placed, when it holds the page's usual start up to its
        ``<body ...>`` tag (one match; see ``_WHOLE_START``); None to leave it to the scanner."""
        placed = place_at_start(chunk, self._head_script, self._assets, self._make_banner)
        if placed is None:
            return None
        out, self._banner = placed
        self.document = True
        self._done_head_script = self._done_assets = self._done_banner = True
        self.injected += len(out) - len(chunk)
        return out

    def finish(self) -> bytes:
        """The held tail of the page and, for a whole document, what could not be placed earlier."""
        if self._done_banner and self._done_assets and not self._carry:
            return b""  # every point is placed and nothing is held
        data, self._carry = self._carry, b""
        out: list[bytes] = []
        self._scan(data, out, final=True)
        if self.document:
            if not self._done_assets:
                self._insert_assets(out)
            if not self._done_banner:
                self._insert(out, self.banner)
                self._done_banner = True
        return b"".join(out)

    def _insert(self, out: list[bytes], piece: bytes) -> None:
        if piece:
            out.append(piece)
            self.injected += len(piece)

    def _insert_assets(self, out: list[bytes]) -> None:
        if not self._done_head_script:
            self._insert(out, self._head_script)
            self._done_head_script = True
        self._insert(out, self._assets)
        self._done_assets = True

    def _scan(self, data: bytes, out: list[bytes], final: bool) -> int:
        """Append ``data`` with insertions to ``out``; return where the unread (carried) part starts."""
        i = 0
        end = len(data)
        emitted = 0  # data[emitted:i] is read and not yet in ``out``
        while i < end:
            if self._done_banner and self._done_assets:
                i = end  # nothing left to place: the rest goes on unread
                break
            state = self._state
            if state == _DATA:
                i = _PLAIN.match(data, i).end()  # type: ignore[union-attr]  # it matches the empty run too
                j = data.find(b"<", i)
                if j < 0:
                    i = end
                    break
                decided = self._open_tag(data, j, final)
                if decided is None:  # cut by the chunk's end
                    out.append(data[emitted:j])
                    return j
                i, before = decided
                if before:
                    out.append(data[emitted:j])
                    emitted = j
                    if before == b"assets":
                        self._insert_assets(out)
            elif state == _TAG:
                i = self._read_tag(data, i)
                if self._state != _TAG:  # the tag's ">" was read
                    emitted = self._tag_read(data, emitted, i, out)
            elif state == _COMMENT:
                j = data.find(b"-->", i)
                if j < 0:
                    # Keep the last two bytes: they may be the start of "-->".
                    i = end if final else max(i, end - 2)
                    if not final:
                        out.append(data[emitted:i])
                        return i
                    break
                i = j + 3
                self._state = _DATA
            elif state == _DECLARATION:
                j = data.find(b">", i)
                if j < 0:
                    i = end
                    break
                i = j + 1
                self._state = _DATA
            else:  # raw text: look for its end tag
                i = self._find_raw_end(data, i, final)
                if i < 0:
                    at = -i - 1
                    out.append(data[emitted:at])
                    return at
        out.append(data[emitted:i])
        return i

    def _tag_read(self, data: bytes, emitted: int, i: int, out: list[bytes]) -> int:
        """A tag ended right before ``i``: the head script goes after <head>, the banner after <body>,
        and a raw-text element's end tag is looked for next. Returns the new ``emitted``."""
        kind = self._tag_kind
        self._tag_kind = b""
        if kind in (b"head", b"body"):
            out.append(data[emitted:i])
            if kind == b"head" and not self._done_head_script:
                self._insert(out, self._head_script)
                self._done_head_script = True
            elif kind == b"body" and not self._done_banner:
                self._insert(out, self.banner)
                self._done_banner = True
            return i
        if kind in _RAW_TEXT:
            self._state = _RAW
            self._raw_end = b"</" + kind
        return emitted

    def _open_tag(self, data: bytes, j: int, final: bool) -> tuple[int, bytes] | None:
        """Read what follows the "<" at ``j``: where reading goes on, and b"assets" when the
        stylesheet and script belong right before this tag. None when the chunk ends too soon."""
        end = len(data)
        if j + 1 >= end:
            return None if not final else (end, b"")
        second = data[j + 1]
        if second == 0x21:  # "!": a comment, a doctype or another declaration
            if data.startswith(b"<!--", j):
                self._state = _COMMENT
                return j + 4, b""
            if end - j < 9 and not final:
                return None  # "<!-" or "<!DOCTY" cut short
            if data[j + 2 : j + 9].lower() == b"doctype":
                self.document = True
            self._state = _DECLARATION
            return j + 2, b""
        if second == 0x3F:  # "<?": a bogus comment up to ">"
            self._state = _DECLARATION
            return j + 2, b""
        closing = second == 0x2F
        start = j + 2 if closing else j + 1
        if start >= end:
            return None if not final else (end, b"")
        if data[start] not in _LETTERS:
            return j + 1, b""  # "<" as text
        k = start
        while k < end and data[k] not in _NAME_END and k - start <= MAX_CARRY:
            k += 1
        if k >= end and not final:
            return None
        name = data[start:k].lower()
        self._state = _TAG
        self._quote = 0
        self._last = 0
        before = b""
        if closing:
            if name == b"head" and not self._done_assets:
                before = b"assets"
            return k, before
        if name in (b"html", b"head", b"body"):
            self.document = True
        if name == b"body" and not self._done_assets:
            before = b"assets"
        if name in (b"head", b"body") or name in _RAW_TEXT:
            self._tag_kind = name
        return k, before

    def _read_tag(self, data: bytes, i: int) -> int:
        """Read a tag's attributes up to its ">", attribute values in quotes included."""
        quote = self._quote
        last = self._last
        if not quote and last != 0x3D:  # not inside a value, nor right after "=": one match reads it
            found = _TAG_END.match(data, i)
            if found is not None:
                self._state = _DATA
                return found.end()
        end = len(data)
        while i < end:
            if quote:
                j = data.find(b'"' if quote == 0x22 else b"'", i)
                if j < 0:
                    i = end
                    break
                i = j + 1
                quote = 0
                last = 0x22
                continue
            found = _TAG_STOP.search(data, i)
            j = end if found is None else found.start()
            before = data[i:j].rstrip(_SPACE)
            if before:
                last = before[-1]
            if found is None:
                i = end
                break
            byte = data[j]
            i = j + 1
            if byte == 0x3E:  # ">"
                self._state = _DATA
                break
            if last == 0x3D:  # a quote right after "=" (spaces between) opens a value
                quote = byte
            else:
                last = byte
        self._quote = quote
        self._last = last
        return i

    def _find_raw_end(self, data: bytes, i: int, final: bool) -> int:
        """Past the raw text's end tag name (state back to reading a tag), or ``-(at + 1)`` to hold
        from ``at`` when the chunk ends inside a candidate end tag."""
        marker = self._raw_end
        size = len(marker)
        end = len(data)
        while True:
            j = data.find(b"</", i)
            if j < 0:
                if not final and end and data[end - 1] == 0x3C:
                    return -(end - 1) - 1
                return end
            if j + size >= end and not final:
                return -j - 1
            if data[j : j + size].lower() == marker and (j + size >= end or data[j + size] in _NAME_END):
                self._state = _TAG
                self._quote = 0
                self._last = 0
                return j + size
            i = j + 2
