"""Stored rows: the only place where a record's raw values are read and turned into columns.

The policy (``policy.py``) has already decided each record's fate; ``RowBuilder`` applies that
decision to the values (pseudonymous visitor keys, truncated IPs, redacted paths, scrubbed props)
and encodes rows as the JSONCompactEachRow lines the journal keeps and ClickHouse receives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container
from functools import lru_cache, partial
from typing import Any

import orjson

from .policy import KEEP, withdrawn
from .pseudonymize import (
    SaltStore,
    consented_visitor,
    declared_props,
    pseudonymous_visitor,
    redact_path,
    redact_text,
    reduce_user_agent,
    referrer_host,
    split_query,
    truncate_ip,
)
from .records import (
    LINK,
    LINK_PSEUDONYM,
    CollectedEvents,
    Location,
    RawRecord,
    ReceiptRecord,
    Visitor,
    new_record_hex,
    new_record_hex_bytes,
    props_text,
)
from .settings import Settings
from .store.schema import EVENT_INDEX

# Positions of the event row's columns the pipeline reads (store/schema.py EVENT_COLUMNS).
IDENTIFIED = EVENT_INDEX["identified"]
VISITOR = EVENT_INDEX["visitor"]


class RowBuilder:
    """Turns raw records into stored rows: the only place where raw values are read."""

    def __init__(
        self, settings: Settings, salts: SaltStore, *, on_props_dropped: Callable[[int], None] | None = None
    ) -> None:
        self._key = settings.pseudonym_key.encode("utf-8")
        # [event_props]: the props keys a pseudonymised row of each event may keep (None: all).
        self._declared = settings.declared_props
        self._on_props_dropped = on_props_dropped
        self._salts = salts
        # One keyed hash per consent id, not per row: a visitor's rows arrive together.
        self._consented = lru_cache(maxsize=8192)(partial(consented_visitor, self._key))
        # Pseudonymous keys hash the full address: they are worked out once per sender and batch
        # (``_Memo``, ``collected_lines``) and never kept past it, so no raw address lingers here.
        self._marketing = settings.marketing_category
        # The last record's who and where, carried to the next call: a group commit often holds
        # one record, of the visitor the previous one held.
        self._last = _Memo()

    def __repr__(self) -> str:
        return "RowBuilder(<keys hidden>)"

    def event_lines(self, records: list[RawRecord]) -> tuple[list[bytes], list[int]]:
        """Each record's stored row as one JSONCompactEachRow line, and its erasure key (the visitor
        when the row is identified, else -1): what the journal keeps and ClickHouse receives.
        Values repeated within the call (one visitor's IP, a page's query string and referrer) are
        worked out once; of them only the last record's who and where are remembered after it."""
        memo = _Memo(self._last)
        lines: list[bytes] = []
        keys: list[int] = []
        for raw in records:
            row = self._event_values(raw, memo)
            lines.append(encode_line(row))
            keys.append(row[VISITOR] if row[IDENTIFIED] else -1)
        self._last = _Memo(memo)
        return lines, keys

    def collected_lines(
        self, batches: list[CollectedEvents], erased: Container[str] = ()
    ) -> tuple[list[bytes], list[int]]:
        """``event_lines`` of the batches' records, without building the records. A consent id in
        ``erased`` was withdrawn while its events waited: they are stored pseudonymised instead.

        The events of one request that share a name, category, decision, URL and referrer differ
        in their stored row only by the row id and the props: their line is encoded once as a
        template, and each event's line is the template with its id and props put in.
        """
        memo = _Memo()
        # Who sent an event varies only with the request's visitor and the consent id and action its
        # category gave it; where from with its location. Both are worked out once per call: one
        # visitor's requests of a group commit share them too.
        whos: dict[tuple[Any, str | None, str], tuple[bool, int, list[str], bool, str, Any]] = {}
        wheres: dict[Location, tuple[str, str, Any, str]] = {}
        lines: list[bytes] = []
        keys: list[int] = []
        for batch in batches:
            ts, site, visitor = batch.ts, batch.site, batch.visitor
            day = int(ts // _DAY)
            sender = (visitor, site, day)
            # (name, category, action, consent id, location) -> the line's middle, the erasure key
            # and whether the row is identified (props are kept as sent).
            templates: dict[tuple[Any, ...], tuple[bytes, int, bool]] = {}
            for event in batch.events:
                consent_id = event.consent_id
                action = event.action
                if consent_id is not None and consent_id in erased:
                    consent_id, action = None, withdrawn(action)
                shape = (event.name, event.category, action, consent_id, event.location)
                template = templates.get(shape)
                if template is None:
                    name, category, action, consent_id, location = shape
                    who = whos.get((sender, consent_id, action))
                    if who is None:
                        who = whos[(sender, consent_id, action)] = self._who(
                            visitor, site, consent_id, action, day, memo
                        )
                    where = wheres.get(location)
                    if where is None:
                        where = wheres[location] = _where(location, memo)
                    row = self._row("", ts, site, "event", name, category, who, where, 0, 0, None)
                    # '["",<the other columns>,""]': the id first, the props last, both empty here.
                    line = encode_line(row)
                    identified = bool(row[IDENTIFIED])
                    template = templates[shape] = (line[4:-3], row[VISITOR] if identified else -1, identified)
                middle, key, keep = template
                props = self._props(name, event.props, keep)
                lines.append(b"".join((b'["', new_record_hex_bytes(), b'",', middle, orjson.dumps(props), b"]")))
                keys.append(key)
        return lines, keys

    def _event_values(self, raw: RawRecord, memo: _Memo) -> list[Any]:
        ts = raw.ts
        # The records of one request come in a row and share who sent them and, mostly, where
        # from: both are worked out again only when they differ from the previous record's.
        visitor = raw.visitor
        who_key = (visitor, raw.site, raw.consent_id, raw.action, int(ts // _DAY))
        if who_key == memo.who_key:
            who = memo.who
        else:
            who = memo.who = self._who(*who_key, memo)
            memo.who_key = who_key
        location = raw.location
        if location == memo.where_key:
            where = memo.where
        else:
            where = memo.where = _where(location, memo)
            memo.where_key = location
        props = raw.props
        if raw.kind == LINK:
            # The link of a choice: this request's pseudonymous key of the day, stored under the
            # consented key, so that the visit's earlier hits join the consented ones (docs/privacy.md).
            props = {LINK_PSEUDONYM: self._pseudonym(visitor.ip, visitor.user_agent, raw.site, int(ts // _DAY))}
        return self._row(
            raw.event_id or new_record_hex(), ts, raw.site, raw.kind, raw.name, raw.category, who, where,
            raw.status, raw.duration_ms, props,
        )

    def _row(
        self, event_id: Any, ts: float, site: str, kind: str, name: str, category: str,
        who: tuple[bool, int, list[str], bool, str, Any], where: tuple[str, str, Any, str],
        status: int, duration_ms: int, props: dict[str, Any] | str | None,
    ) -> list[Any]:
        """A stored row in ``EVENT_COLUMNS`` order from a record's own values, who and where."""
        keep, visitor, granted, marketing, ip_prefix, agent = who
        path, referrer, utm, click_id = where
        # Click ids are marketing attribution: only a visitor who granted marketing keeps them.
        if not (keep and marketing):
            click_id = ""
        return [
            event_id,
            ts,
            site,
            kind,
            name,
            category,
            1 if keep else 0,
            visitor,
            granted,
            path,
            status,
            duration_ms,
            referrer,
            utm[0],
            utm[1],
            utm[2],
            utm[3],
            utm[4],
            click_id,
            ip_prefix,
            agent.browser,
            agent.browser_version,
            agent.os,
            agent.device,
            1 if agent.is_bot else 0,
            self._props(name, props, keep),
        ]

    def _props(self, name: str, props: dict[str, Any] | str | None, keep: bool) -> str:
        """The ``props`` column of a row: the props as sent when the row is identified; else only the
        keys ``[event_props]`` declares for the event, their free text redacted. ``props`` is a dict or
        its JSON text (``CollectedEvents``)."""
        if not props:
            return ""
        if keep:
            return props if isinstance(props, str) else props_text(props)
        parsed: dict[str, Any] = orjson.loads(props) if isinstance(props, str) else props
        if self._declared is not None:
            filtered = declared_props(parsed, name, self._declared)
            if filtered.dropped and self._on_props_dropped is not None:
                self._on_props_dropped(filtered.dropped)
            parsed = filtered.props
        scrubbed = _scrub_props(parsed)
        return props_text(scrubbed) if scrubbed else ""

    def _who(
        self, visitor: Visitor, site: str, consent_id: str | None, action: str, day: int, memo: _Memo
    ) -> tuple[bool, int, list[str], bool, str, Any]:
        """Identified or not, the visitor key, the granted categories as stored, marketing granted,
        the IP prefix and the reduced user agent of a record."""
        ip, user_agent, granted = visitor.ip, visitor.user_agent, visitor.granted
        ip_prefix = memo.ip_prefix(ip)
        keep = action == KEEP and consent_id is not None
        if keep:
            key = self._consented(consent_id or "")
            stored_granted = _sorted_categories(granted)
        else:
            key = self._pseudonym(ip, user_agent, site, day)
            stored_granted = _NONE
        return keep, key, stored_granted, self._marketing in granted, ip_prefix, reduce_user_agent(user_agent)

    def _pseudonym(self, ip: str, user_agent: str, site: str, day: int) -> int:
        """The pseudonymous visitor key of ``day`` (days since the epoch) for this address and agent."""
        return pseudonymous_visitor(self._salts.salt_for(_day_of(day)), site, ip, user_agent)

    def receipt_line(self, rec: ReceiptRecord) -> bytes:
        return encode_line(self._receipt_values(rec))

    def _receipt_values(self, rec: ReceiptRecord) -> list[Any]:
        agent = reduce_user_agent(rec.user_agent)
        return [
            rec.receipt_id,
            rec.ts,
            rec.site,
            rec.consent_id,
            rec.version,
            list(rec.categories),
            rec.method,
            rec.banner_hash,
            rec.locale,
            truncate_ip(rec.ip),
            agent.browser,
            agent.os,
            agent.device,
            int(rec.child),
            list(rec.guardian_categories),
        ]

    def visitor_of(self, consent_id: str) -> int:
        """The visitor key under which a consent id's identifiable rows are stored (for erasure)."""
        return consented_visitor(self._key, consent_id)


_NO_WHO: tuple[bool, int, list[str], bool, str, Any] = (False, 0, [], False, "", None)
_NO_WHERE: tuple[str, str, Any, str] = ("", "", None, "")


class _Memo:
    """Derived values of one batch of records, by their raw inputs; dropped with the batch."""

    __slots__ = ("_ips", "_paths", "_queries", "_referrers", "where", "where_key", "who", "who_key")

    def __init__(self, previous: _Memo | None = None) -> None:
        # The previous record's inputs and what was worked out from them (RowBuilder._event_values),
        # from the previous batch's last record when there was one. ``who`` and ``where`` are read
        # only once their key matched, so never before they are set.
        self.who_key: tuple[Any, ...] | None = previous.who_key if previous else None
        self.who: tuple[bool, int, list[str], bool, str, Any] = previous.who if previous else _NO_WHO
        self.where_key: Location | None = previous.where_key if previous else None
        self.where: tuple[str, str, Any, str] = previous.where if previous else _NO_WHERE
        self._ips: dict[str, str] = {}
        self._queries: dict[str, Any] = {}
        self._referrers: dict[tuple[str, str], str] = {}
        self._paths: dict[str, str] = {}

    def ip_prefix(self, ip: str) -> str:
        found = self._ips.get(ip)
        if found is None:
            found = self._ips[ip] = truncate_ip(ip)
        return found

    def query(self, query: str) -> Any:
        found = self._queries.get(query)
        if found is None:
            found = self._queries[query] = split_query(query)
        return found

    def referrer(self, referrer: str, host: str) -> str:
        key = (referrer, host)
        found = self._referrers.get(key)
        if found is None:
            found = self._referrers[key] = referrer_host(referrer, host)
        return found

    def path(self, path: str) -> str:
        found = self._paths.get(path)
        if found is None:
            found = self._paths[path] = redact_path(path)
        return found


def _where(location: Location, memo: _Memo) -> tuple[str, str, Any, str]:
    """The stored path, referrer host, UTM values and click id of a record's location."""
    query, referrer = location.query, location.referrer
    parts = memo.query(query) if query else _NO_QUERY
    stored_referrer = memo.referrer(referrer, location.host) if referrer else ""
    return memo.path(location.path), stored_referrer, parts.utm, parts.click_id


_NONE: list[str] = []
_NO_QUERY = split_query("")
_DAY = 86400


@lru_cache(maxsize=64)
def _sorted_categories(granted: frozenset[str]) -> list[str]:
    return sorted(granted)


@lru_cache(maxsize=8)
def _day_of(day_number: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=day_number)


def encode_line(row: list[Any]) -> bytes:
    """A row as one JSONCompactEachRow line: column 0 a UUID, column 1 seconds since the epoch.

    Text that cannot be UTF-8 (a lone surrogate) has it replaced rather than failing the row:
    one bad value must never cost a whole batch.
    """
    try:
        return orjson.dumps(row)
    except orjson.JSONEncodeError:
        return orjson.dumps(_clean_row(row))


def _clean_row(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean_row(v) for v in value]
    if isinstance(value, dict):
        return {_clean_row(k): _clean_row(v) for k, v in value.items()}
    return value


def _scrub_props(props: dict[str, Any] | None) -> dict[str, Any] | None:
    """Props of a pseudonymised row lose values that could identify someone."""
    if not props:
        return None
    out: dict[str, Any] = {}
    for key, value in props.items():
        if isinstance(value, str):
            if sum(ch.isdigit() for ch in value) >= 9:
                value = "[redacted]"
            else:
                value = redact_text(value)
        out[key] = value
    return out
