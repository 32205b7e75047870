"""Visit records, collected events and consent receipts; validation of ``/collect`` bodies."""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from binascii import hexlify
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, cast

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

from .errors import RequestError

EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]{0,63}$")
MAX_PROPS = 20
MAX_PROP_KEY = 64
MAX_PROP_VALUE = 256
MAX_URL = 2048
_EVENT_KEYS = frozenset({"name", "url", "referrer", "props"})
# uuid4() makes one getrandom() call per id; on the request path that system call is slow under
# virtualisation and hands the GIL to the writer thread. Ids are cut from one 4 KiB read instead.
_ID_BLOCK = 256
_id_pool: list[bytes] = []
os.register_at_fork(after_in_child=_id_pool.clear)
# Version-4 bits in byte 6 and RFC 4122 variant bits in byte 8, set for a whole block by
# bytes.translate (in C) instead of byte by byte.
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))


def _random_id() -> bytes:
    """16 random bytes with the version-4 and RFC 4122 variant bits set (thread-safe)."""
    try:
        return _id_pool.pop()  # atomic: no two callers get the same bytes
    except IndexError:
        block = bytearray(os.urandom(16 * _ID_BLOCK))
        block[6::16] = block[6::16].translate(_VERSION_4)
        block[8::16] = block[8::16].translate(_VARIANT)
        ids = bytes(block)
        _id_pool.extend([ids[i : i + 16] for i in range(16, len(ids), 16)])
        return ids[:16]


def new_record_id() -> uuid.UUID:
    """A random (version 4) UUID like ``uuid.uuid4()``, from pooled OS randomness (thread-safe)."""
    return uuid.UUID(bytes=_random_id())


def new_record_hex() -> str:
    """``new_record_id()`` as 32 hex digits, which ClickHouse reads as a UUID (no UUID object made)."""
    return _random_id().hex()


def new_record_hex_bytes() -> bytes:
    """``new_record_hex()`` as ASCII bytes, to go straight into an encoded row."""
    return hexlify(_random_id())


# The kind of the record a choice that grants analytics writes: the consented visitor key of the
# chooser with, in its props under LINK_PSEUDONYM, the pseudonymous key of the same request (the key
# the visit's hits before the choice were stored under). Erased with the consent id, as it is an
# identified row (docs/privacy.md, "Consent on the landing page").
LINK = "link"
LINK_PSEUDONYM = "pseudonym"


class Visitor(Struct, frozen=True, gc=False, array_like=True):
    """Who a record is of, as the request showed them: the user agent, the client address and the
    categories their consent grants. One per request, shared by every record of it (a page's visit,
    a ``/collect`` request's events). Raw values: ``rows.RowBuilder`` derives what is stored."""

    user_agent: str
    ip: str
    granted: frozenset[str]

    def __repr__(self) -> str:
        # The address and the agent together identify a person: never whole in a log line.
        return f"Visitor(<address and agent hidden>, granted={sorted(self.granted)!r})"


class Location(Struct, frozen=True, gc=False, array_like=True):
    """Where a record happened: the request's host, the page's path and query, and its referrer
    (raw: the stored path is redacted, the query read for UTM values, the referrer cut to its host).
    The events of one request that share a URL and referrer share one."""

    host: str
    path: str
    query: str
    referrer: str

    def __repr__(self) -> str:
        # Paths and queries can hold an address or a phone number; the host says enough.
        return f"Location(host={self.host!r}, <path, query and referrer hidden>)"


class RawRecord(Struct, frozen=True, gc=False, array_like=True):
    """A visit or an event as captured on the request path, with the policy's decision (``action``,
    and ``consent_id``: None unless the record is identified): who (``visitor``) and where
    (``location``) are parts of their own, shared with the request's other records.

    Raw values (IP, user agent, query) live only in memory; the writer thread turns the record into
    a stored row (``rows.RowBuilder``), so nothing raw reaches ClickHouse or disk. Immutable once
    decided (a changed decision is a copy: ``msgspec.structs.replace``), and never tracked by the
    garbage collector, nor are its parts: visit records wait for the writer in a deque. Build it by
    keyword, or from flat values with ``RawRecord.of``; the middleware alone passes its fields by
    position, since keywords cost a page 7,000 instructions (benchmarks/page_instructions.py).
    """

    kind: str  # "visit" | "event" | "link"
    name: str
    category: str
    action: str  # "keep" | "pseudonymise"
    consent_id: str | None
    ts: float
    site: str
    visitor: Visitor
    location: Location
    status: int = 0
    duration_ms: int = 0
    # An event's props: a dict, or already JSON text (what CollectedEvents.records() passes on).
    props: dict[str, Any] | str | None = None
    # Nobody on the request path needs the id: the writer thread draws it when it builds the row.
    event_id: uuid.UUID | None = None

    @classmethod
    def of(
        cls, *, kind: str, name: str, category: str, action: str, ts: float, site: str, host: str, path: str,
        query: str, referrer: str, user_agent: str, ip: str, consent_id: str | None, granted: frozenset[str],
        status: int = 0, duration_ms: int = 0, props: dict[str, Any] | str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> RawRecord:
        """A record of its own, from flat values (for tools and tests): its parts are made here."""
        return cls(
            kind=kind, name=name, category=category, action=action, consent_id=consent_id, ts=ts, site=site,
            visitor=Visitor(user_agent, ip, granted), location=Location(host, path, query, referrer),
            status=status, duration_ms=duration_ms, props=props, event_id=event_id,
        )  # fmt: skip


class EventFields(Struct, frozen=True, gc=False, array_like=True):
    """One event of a ``/collect`` request as it waits for the writer, decided: its stored name,
    category, action and consent id (None unless identified), where it happened (shared with the
    request's events of the same URL and referrer) and its props as JSON text. Immutable, and never
    tracked by the garbage collector (see ``CollectedEvents``)."""

    name: str
    category: str
    action: str
    consent_id: str | None
    location: Location
    props: str | None


class CollectedEvents(Struct, frozen=True, gc=False):
    """The events of one ``/collect`` request on their way to the writer thread.

    What the events share is held once: when, the site and the visitor; each event is an
    ``EventFields`` struct. A request waits a group commit (a few milliseconds) with its events
    queued, long enough for them to survive young garbage collections. Objects that survive are
    promoted, and every older collection walks them again; 50 ``RawRecord`` objects a request made
    those collections the largest single cost of a batch on the event loop. None of these structs is
    tracked by the collector (``gc=False``), so they cost the collections nothing. The writer encodes
    the events straight to rows (``RowBuilder.collected_lines``); ``records()`` gives them as
    ``RawRecord``s.
    """

    ts: float
    site: str
    visitor: Visitor
    events: list[EventFields]

    def __len__(self) -> int:
        return len(self.events)

    def records(self) -> list[RawRecord]:
        """The events as ``RawRecord``s (for tools and tests; the writer encodes the structs)."""
        return [
            RawRecord(
                kind="event", name=e.name, category=e.category, action=e.action, consent_id=e.consent_id,
                ts=self.ts, site=self.site, visitor=self.visitor, location=e.location, props=e.props,
            )
            for e in self.events
        ]


def props_text(props: dict[str, Any]) -> str:
    """Event props as the JSON text stored in the ``props`` column."""
    try:
        return orjson.dumps(props).decode("utf-8")
    except orjson.JSONEncodeError:  # numbers past 64 bits: the standard encoder writes them all
        return json.dumps(props, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class ReceiptRecord:
    """Proof of one consent choice."""

    ts: float
    site: str
    consent_id: str
    version: str
    categories: tuple[str, ...]
    method: str
    banner_hash: str
    locale: str
    ip: str
    user_agent: str
    receipt_id: uuid.UUID = field(default_factory=new_record_id)
    # A visitor the app marked as under 14, and the categories the legal representative consented to.
    child: bool = False
    guardian_categories: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "receipt_id": str(self.receipt_id),
            "ts": self.ts,
            "consent_id": self.consent_id,
            "version": self.version,
            "categories": list(self.categories),
            "method": self.method,
            "banner_hash": self.banner_hash,
            "locale": self.locale,
            "child": self.child,
            "guardian_categories": list(self.guardian_categories),
        }


class ValidEvent(Protocol):
    """A ``CollectedEvent`` as ``parse_collect_body`` returns it: validated, its defaults in place."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def referrer(self) -> str: ...
    @property
    def props(self) -> dict[str, Any] | None: ...


def parse_collect_body(body: bytes, *, max_events: int) -> list[ValidEvent]:
    """Validate a ``/collect`` body: one event object or a list of them.

    Raises RequestError (400/422) naming the first problem, so a client can fix its tracker.
    """
    events = _accept_fast(body, max_events)
    if events is None:
        events = _parse_strict(body, max_events)
    # Both parsers put the defaults in (no URL is "/", no referrer "", no props None).
    return cast("list[ValidEvent]", events)


# Bodies are first decoded by msgspec into the event shape below, the limits checked as it reads
# them, without raising; anything it cannot vouch for goes to the strict parser further down,
# which alone words the errors. So the fast path may only ever say "valid", and then it must return
# exactly what the strict parser returns. Where msgspec reads a body differently from json.loads,
# and how the check covers it:
# - duplicate keys (msgspec keeps the last): each ':' outside a string separates one object member.
#   Encoded back by msgspec, the document has one such ':' per member it kept (absent fields stay
#   absent: they default to UNSET, which is never written), plus the ':' inside its strings
#   (msgspec never escapes ':'). The body has one per member written, plus at least the ':' of the
#   kept strings, as long as none was written as an escape, so a duplicate makes the body's count
#   higher. Bodies with an escape that could be a colon (\u003a) go to the strict parser.
# - integers beyond 2**53 fail their bound, and so do floats beyond it: the strict parser takes them.
# - NaN, Infinity, 1e400, lone surrogates (escaped or UTF-8-encoded), invalid UTF-8, a BOM and UTF-16
#   are errors in msgspec, so the strict parser handles them; msgspec's strings are therefore always
#   encodable as UTF-8 and need no surrogate check.
# - string limits count characters, as len() does; a name is matched against EVENT_NAME once per
#   run of equal names, in Python, since trackers send runs of one name.
_COLON_ESCAPE = b"\\u003"
_MAX_SAFE = 2**53
_match_name = EVENT_NAME.match

_PropValue = (
    Annotated[str, Meta(max_length=MAX_PROP_VALUE)]
    | Annotated[int, Meta(ge=-_MAX_SAFE, le=_MAX_SAFE)]
    | Annotated[float, Meta(ge=-float(_MAX_SAFE), le=float(_MAX_SAFE))]
    | bool
    | None
)
_Url = Annotated[str, Meta(max_length=MAX_URL)]
_Props = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=MAX_PROP_KEY)], _PropValue], Meta(max_length=MAX_PROPS)
]


class CollectedEvent(Struct, forbid_unknown_fields=True, gc=False):
    """One validated event from a ``/collect`` body: ``url`` is never empty ("/" when none was
    sent), ``referrer`` a string, ``props`` a flat dict or None.

    Its annotations are what the fast path decodes a body into, limits included: as decoded, an
    absent field is UNSET and ``url`` and ``referrer`` may be None or empty, until the fast path
    puts the strict parser's defaults in. Instances are never tracked by the garbage collector
    (``gc=False``): a request makes up to 50 of them, and untracked objects neither count towards
    a collection nor get walked by one.
    """

    name: str
    url: _Url | UnsetType | None = UNSET
    referrer: _Url | UnsetType | None = UNSET
    props: _Props | UnsetType | None = UNSET


_fast_decode = msgspec.json.Decoder(CollectedEvent | list[CollectedEvent]).decode
_fast_encode = msgspec.json.Encoder().encode
_FAST_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def _accept_fast(body: bytes, max_events: int) -> list[CollectedEvent] | None:
    """The events of a body the strict parser accepts, or None when that is not certain."""
    if _COLON_ESCAPE in body:
        return None
    try:
        data = _fast_decode(body)
    except _FAST_ERRORS:
        return None
    if isinstance(data, list):
        events = data
        if not events or len(events) > max_events:
            return None
    else:
        events = [data]
    # Before the defaults go in: encoded, they would be members the body never had.
    if body.count(b":") != _fast_encode(data).count(b":"):
        return None
    valid_name: str | None = None
    for event in events:
        name = event.name
        if name != valid_name:
            if not _match_name(name):
                return None
            valid_name = name
        # The strict parser's defaults: no URL (or an empty one) is "/", no referrer "", no props None.
        if not event.url:
            event.url = "/"
        if not event.referrer:
            event.referrer = ""
        if event.props is UNSET:
            event.props = None
    return events


def _parse_strict(body: bytes, max_events: int) -> list[CollectedEvent]:
    try:
        data = json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RequestError:
        raise
    except (ValueError, RecursionError):
        raise RequestError("the body is not valid JSON; send one event object or a list of them") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise RequestError("the list of events is empty; send at least one event")
    if len(items) > max_events:
        raise RequestError(
            f"{len(items)} events in one request; send at most {max_events} per request",
            status=413,
        )
    return [_event(i, item) for i, item in enumerate(items)]


def _reject_constant(name: str) -> Any:
    raise RequestError(f"{name} is not allowed in JSON; send finite numbers only")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(f"the key {key[:64]!r} appears twice in one object; send it once")
        out[key] = value
    return out


def _event(index: int, item: Any) -> CollectedEvent:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise RequestError(f"{where} is a {type(item).__name__}; each event is an object", field=where)
    unknown = set(item) - _EVENT_KEYS
    if unknown:
        key = sorted(unknown)[0][:64]
        raise RequestError(
            f"{where}.{key} is not a known field; use name, url, referrer, props", field=f"{where}.{key}"
        )
    name = item.get("name")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise RequestError(
            f"{where}.name must be 1-64 characters: a letter, then letters, digits or _ . : -",
            status=422,
            field=f"{where}.name",
        )
    url = _text(item.get("url", "/"), f"{where}.url", MAX_URL)
    referrer = _text(item.get("referrer", ""), f"{where}.referrer", MAX_URL)
    return CollectedEvent(name, url or "/", referrer, _props(item.get("props"), f"{where}.props"))


def _text(value: Any, where: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string", status=422, field=where)
    if len(value) > limit:
        raise RequestError(f"{where} is {len(value)} characters; the limit is {limit}", status=422, field=where)
    _unicode(value, where)
    return value


def _unicode(value: str, where: str) -> None:
    # JSON may escape lone surrogates (\ud800); such a string cannot be encoded for ClickHouse
    # and would fail the writer's whole batch, so it is refused here.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} is not valid Unicode (a lone surrogate escape); send UTF-8 text",
                           status=422, field=where) from None


def _props(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be an object of simple values", status=422, field=where)
    if len(value) > MAX_PROPS:
        raise RequestError(f"{where} has {len(value)} keys; the limit is {MAX_PROPS}", status=422, field=where)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if len(key) > MAX_PROP_KEY or not key:
            raise RequestError(f"{where} keys must be 1-{MAX_PROP_KEY} characters", status=422, field=where)
        _unicode(key, where)
        if isinstance(item, bool) or item is None:
            out[key] = item
        elif isinstance(item, int):
            if abs(item) > _MAX_SAFE:
                raise RequestError(f"{where}.{key} is out of range", status=422, field=f"{where}.{key}")
            out[key] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise RequestError(f"{where}.{key} must be finite", status=422, field=f"{where}.{key}")
            out[key] = item
        elif isinstance(item, str):
            if len(item) > MAX_PROP_VALUE:
                raise RequestError(
                    f"{where}.{key} is {len(item)} characters; the limit is {MAX_PROP_VALUE}",
                    status=422,
                    field=f"{where}.{key}",
                )
            _unicode(item, f"{where}.{key}")
            out[key] = item
        else:
            raise RequestError(
                f"{where}.{key} is a {type(item).__name__}; values must be strings, numbers, booleans or null",
                status=422,
                field=f"{where}.{key}",
            )
    return out
