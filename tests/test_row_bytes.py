"""The stored bytes of a record are fixed: the journal and ClickHouse read exactly these lines.

How a record is held in memory (one struct, or parts shared between records) may change; the line
``RowBuilder`` encodes for it may not, to the byte. The salt of the day is pinned, so that the
pseudonymous keys are too; the row id (random for ``/collect`` events) is compared apart.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from consent_gateway import Settings
from consent_gateway.pseudonymize import SaltStore
from consent_gateway.records import CollectedEvents, EventFields, Location, RawRecord, Visitor, props_text
from consent_gateway.rows import RowBuilder

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
IP = "203.0.113.7"
GRANTED = frozenset({"necessary", "analytics", "marketing"})
EVENT_ID = uuid.UUID("6f1c1a52-3d7e-4a53-9a3f-2b8c0d7e9f10")


def _rows(make_settings: Callable[..., Settings], tmp_path: Path, noon: float) -> RowBuilder:
    day = dt.datetime.fromtimestamp(noon, dt.UTC).date().isoformat()
    keys = tmp_path / "salts"
    keys.mkdir()
    (keys / "salts.json").write_text(json.dumps({day: "5a" * 32}))
    return RowBuilder(make_settings(), SaltStore(keys))


def _noon() -> float:
    return dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


def _records(noon: float) -> list[RawRecord]:
    base = {
        "name": "pageview", "category": "analytics", "ts": noon, "site": "test-site", "host": "testserver",
        "user_agent": CHROME, "ip": IP, "event_id": EVENT_ID,
    }  # fmt: skip
    return [
        RawRecord.of(  # a kept visit: consented key, click id, UTM values, outside referrer host
            kind="visit",
            action="keep",
            path="/students/010-1234-5678",
            query="utm_source=mail&gclid=abc",
            referrer="https://search.example/q?x=1",
            consent_id="c1",
            granted=GRANTED,
            status=200,
            duration_ms=12,
            **base,  # type: ignore[arg-type]
        ),
        RawRecord.of(  # a pseudonymised visit: the key of the day, no click id, no granted categories
            kind="visit",
            action="pseudonymise",
            path="/a",
            query="gclid=zz&utm_campaign=x",
            referrer="http://testserver/back",
            consent_id=None,
            granted=frozenset(),
            status=404,
            **base,  # type: ignore[arg-type]
        ),
        RawRecord.of(  # an event with props, pseudonymised: free text scrubbed
            kind="event",
            action="pseudonymise",
            path="/join",
            query="",
            referrer="",
            consent_id=None,
            granted=frozenset({"necessary"}),
            props={"contact": "kim@example.com", "n": 3},
            **{**base, "name": "signup"},  # type: ignore[arg-type]
        ),
        RawRecord.of(  # the link of a choice: the pseudonymous key under the consented one
            kind="link",
            action="keep",
            path="/landing",
            query="utm_source=news",
            referrer="",
            consent_id="c1",
            granted=GRANTED,
            **{**base, "name": "consent"},  # type: ignore[arg-type]
        ),
    ]


UA_COLUMNS = b'"203.0.113.0/24","Chrome","126","Linux","desktop",0'
KEPT = b'1,10798732335347224938,["analytics","marketing","necessary"]'
PSEUDONYMOUS = b"0,6552158048055406567,[]"
RECORD_LINES = [
    b'"test-site","visit","pageview","analytics",' + KEPT + b',"/students/[redacted]",200,12,"search.example",'
    b'"mail","","","","","gclid:abc",' + UA_COLUMNS + b',""]',
    b'"test-site","visit","pageview","analytics",'
    + PSEUDONYMOUS
    + b',"/a",404,0,"","","","x","","","",'
    + UA_COLUMNS
    + b',""]',
    b'"test-site","event","signup","analytics",'
    + PSEUDONYMOUS
    + b',"/join",0,0,"","","","","","","",'
    + UA_COLUMNS
    + b',"{\\"contact\\":\\"[redacted]\\",\\"n\\":3}"]',
    b'"test-site","link","consent","analytics",'
    + KEPT
    + b',"/landing",0,0,"","news","","","","","",'
    + UA_COLUMNS
    + b',"{\\"pseudonym\\":6552158048055406567}"]',
]
COLLECTED_LINES = [
    b'"test-site","event","signup","marketing",' + KEPT + b',"/join",0,0,"search.example","news","","","","",'
    b'"gclid:abc",' + UA_COLUMNS + b',"{\\"plan\\":\\"pro\\",\\"contact\\":\\"kim@example.com\\"}"]',
    b'"test-site","event","signup","marketing",' + KEPT + b',"/join",0,0,"search.example","news","","","","",'
    b'"gclid:abc",' + UA_COLUMNS + b',""]',
    b'"test-site","event","scroll","analytics",' + PSEUDONYMOUS + b',"/students/[redacted]",0,0,"","","","","","",'
    b'"",' + UA_COLUMNS + b',"{\\"plan\\":\\"pro\\",\\"contact\\":\\"[redacted]\\"}"]',
    b'"test-site","event","scroll","analytics",'
    + PSEUDONYMOUS
    + b',"/a",0,0,"","mail","","","","","",'
    + UA_COLUMNS
    + b',"{\\"plan\\":\\"pro\\",\\"contact\\":\\"[redacted]\\"}"]',
]


def test_records_encode_to_the_same_bytes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    noon = _noon()
    lines, keys = _rows(make_settings, tmp_path, noon).event_lines(_records(noon))
    start = b'["' + str(EVENT_ID).encode() + b'",' + orjson.dumps(noon) + b","
    assert lines == [start + line for line in RECORD_LINES]
    assert keys == [10798732335347224938, -1, -1, 10798732335347224938]


def test_collected_events_encode_to_the_same_bytes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A /collect request's events, one of them of a consent id withdrawn while it waited."""
    noon = _noon()
    lines, keys = _rows(make_settings, tmp_path, noon).collected_lines([_collected(noon)], {"erased"})
    # A random row id (32 hex digits) first, then the columns as they always were.
    assert all(len(line[2:34]) == 32 and int(line[2:34], 16) >= 0 and line[34:36] == b'",' for line in lines)
    assert [line[:2] + line[36:] for line in lines] == [
        b'["' + orjson.dumps(noon) + b"," + line for line in COLLECTED_LINES
    ]
    assert keys == [10798732335347224938, 10798732335347224938, -1, -1]


def _collected(noon: float) -> CollectedEvents:
    props = props_text({"plan": "pro", "contact": "kim@example.com"})
    news, search = "utm_source=news&gclid=abc", "https://search.example/"
    student = Location("testserver", "/students/kim@example.com", "", "")
    back = Location("testserver", "/a", "utm_source=mail", "http://testserver/back")
    events = [
        EventFields("signup", "marketing", "keep", "c1", Location("testserver", "/join", news, search), props),
        EventFields("signup", "marketing", "keep", "c1", Location("testserver", "/join", news, search), None),
        EventFields("scroll", "analytics", "pseudonymise", None, student, props),
        EventFields("scroll", "analytics", "keep", "erased", back, props),
    ]  # fmt: skip
    return CollectedEvents(noon, "test-site", Visitor(CHROME, IP, GRANTED), events)
