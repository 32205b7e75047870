"""The policy matrix (keep / pseudonymise / drop) and the rows it produces."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from functools import lru_cache, partial
from typing import Any

from .consent import Consent
from .pseudonymize import (
    SaltStore,
    consented_visitor,
    pseudonymous_visitor,
    redact_path,
    reduce_user_agent,
    referrer_host,
    split_query,
    truncate_ip,
)
from .records import RawRecord, ReceiptRecord, new_record_id
from .settings import Settings

KEEP = "keep"
PSEUDONYMISE = "pseudonymise"
DROP = "drop"


class Policy:
    """Decides what happens to a record of a given kind for a given consent.

    Visits are governed by the ``analytics`` category under the ``visit`` row of the matrix;
    an event is governed by its registered category under that category's row (categories with
    no row of their own use the ``analytics`` row). Required categories are always kept.
    """

    def __init__(self, settings: Settings) -> None:
        self._rows = {kind: (granted, refused) for kind, granted, refused in settings.policy_matrix}
        self._required = settings.required_categories
        self._fallback = self._rows.get("analytics", (KEEP, PSEUDONYMISE))

    def decide(self, kind: str, category: str, consent: Consent) -> str:
        if category in self._required:
            return KEEP
        granted, refused = self._rows.get(kind) or self._rows.get(category) or self._fallback
        return granted if consent.allows(category) else refused

    def decide_visit(self, consent: Consent) -> str:
        return self.decide("visit", "analytics", consent)

    def decide_event(self, category: str, consent: Consent) -> str:
        return self.decide(category, category, consent)


class RowBuilder:
    """Turns raw records into stored rows: the only place where raw values are read."""

    def __init__(self, settings: Settings, salts: SaltStore) -> None:
        self._key = settings.pseudonym_key.encode("utf-8")
        self._salts = salts
        # One keyed hash per consent id, not per row: a visitor's rows arrive together.
        self._consented = lru_cache(maxsize=8192)(partial(consented_visitor, self._key))
        self._marketing = "marketing"

    def __repr__(self) -> str:
        return "RowBuilder(<keys hidden>)"

    def event_row(self, raw: RawRecord) -> list[Any]:
        when = dt.datetime.fromtimestamp(raw.ts, dt.UTC)
        ip_prefix = truncate_ip(raw.ip)
        agent = reduce_user_agent(raw.user_agent)
        query = split_query(raw.query)
        keep = raw.action == KEEP and raw.consent_id is not None
        if keep:
            visitor = self._consented(raw.consent_id or "")
            granted = sorted(raw.granted)
        else:
            salt = self._salts.salt_for(when.date())
            visitor = pseudonymous_visitor(salt, raw.site, ip_prefix, raw.user_agent)
            granted = []
        # Click ids are marketing attribution: only a visitor who granted marketing keeps them.
        click_id = query.click_id if keep and self._marketing in raw.granted else ""
        props = raw.props if keep else _scrub_props(raw.props)
        return [
            raw.event_id or new_record_id(),
            when,
            raw.site,
            raw.kind,
            raw.name,
            raw.category,
            1 if keep else 0,
            visitor,
            granted,
            redact_path(raw.path),
            raw.status,
            raw.duration_ms,
            referrer_host(raw.referrer, raw.host),
            *query.utm,
            click_id,
            ip_prefix,
            agent.browser,
            agent.browser_version,
            agent.os,
            agent.device,
            1 if agent.is_bot else 0,
            json.dumps(props, ensure_ascii=False, separators=(",", ":")) if props else "",
        ]

    def receipt_row(self, rec: ReceiptRecord) -> list[Any]:
        agent = reduce_user_agent(rec.user_agent)
        return [
            rec.receipt_id,
            dt.datetime.fromtimestamp(rec.ts, dt.UTC),
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
        ]

    def visitor_of(self, consent_id: str) -> int:
        """The visitor key under which a consent id's identifiable rows are stored (for erasure)."""
        return consented_visitor(self._key, consent_id)


def _scrub_props(props: dict[str, Any] | None) -> dict[str, Any] | None:
    """Props of a pseudonymised row lose values that could identify someone."""
    if not props:
        return None
    out: dict[str, Any] = {}
    for key, value in props.items():
        if isinstance(value, str):
            if "@" in value or sum(ch.isdigit() for ch in value) >= 9:
                value = "[redacted]"
        out[key] = value
    return out


def banner_hash(*texts: str) -> str:
    """A short hash of the banner texts a visitor saw, for the receipt."""
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
