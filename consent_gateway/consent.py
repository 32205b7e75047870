"""The consent value handed to the wrapped app as ``scope["consent"]``."""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .signing import ConsentCodec, Verified


class ConsentStatus(enum.StrEnum):
    """Where a visitor stands: no valid choice yet, a valid choice, or one made under an older MAJOR policy."""

    UNSET = "unset"
    GIVEN = "given"
    OUTDATED = "outdated"


class Method(enum.StrEnum):
    """How a choice was made; recorded in the cookie and in each receipt."""

    ACCEPT_ALL = "accept_all"
    REJECT_ALL = "reject_all"
    CUSTOM = "custom"
    GPC = "gpc"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """What the signed cookie carries."""

    consent_id: str
    version: str
    categories: tuple[str, ...]
    method: str
    issued_at: int

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


@dataclass(frozen=True, slots=True)
class Consent:
    """A visitor's consent as the server enforces it.

    ``categories`` is the effective set: required categories always, chosen ones only while the
    choice is valid for the policy in force, and never a category the browser's GPC signal refuses.
    """

    status: ConsentStatus
    categories: frozenset[str]
    consent_id: str | None = None
    version: str | None = None
    method: str | None = None
    issued_at: int | None = None
    gpc: bool = False

    def allows(self, category: str) -> bool:
        """True when data or cookies of ``category`` may be used for this visitor."""
        return category in self.categories

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "categories": sorted(self.categories),
            "version": self.version,
            "method": self.method,
            "issued_at": self.issued_at,
            "gpc": self.gpc,
        }


def resolve(
    record: ConsentRecord | None,
    *,
    required: frozenset[str],
    known: frozenset[str],
    policy_major: int,
    gpc: bool,
    gpc_refuses: frozenset[str],
) -> Consent:
    """Turn a verified cookie record (or none) into the consent in force for this request."""
    if record is None:
        return Consent(ConsentStatus.UNSET, required, gpc=gpc)
    if record.major < policy_major:
        return Consent(
            ConsentStatus.OUTDATED,
            required,
            consent_id=record.consent_id,
            version=record.version,
            method=record.method,
            issued_at=record.issued_at,
            gpc=gpc,
        )
    granted = frozenset(record.categories) & known
    if gpc:
        granted -= gpc_refuses
    return Consent(
        ConsentStatus.GIVEN,
        granted | required,
        consent_id=record.consent_id,
        version=record.version,
        method=record.method,
        issued_at=record.issued_at,
        gpc=gpc,
    )


class ConsentResolver:
    """The consent in force for a request's consent cookie(s), GPC signal and policy MAJOR.

    Consent values are immutable, so requests with the same verified cookie share one: the codec
    hands out one ``Verified`` per cached cookie, and its consent is resolved once per GPC signal
    and MAJOR. At most ``cache_size`` resolved consents are kept, the oldest going first.
    """

    def __init__(
        self,
        codec: ConsentCodec,
        *,
        required: frozenset[str],
        known: frozenset[str],
        gpc_refuses: frozenset[str],
        policy_major: int,
        cache_size: int,
    ) -> None:
        self._codec = codec
        self._required = required
        self._known = known
        self._gpc_refuses = gpc_refuses
        self._no_choice = {
            gpc: resolve(
                None, required=required, known=known, policy_major=policy_major, gpc=gpc, gpc_refuses=gpc_refuses
            )
            for gpc in (False, True)
        }
        self._resolved: dict[tuple[int, bool, int], tuple[Verified, Consent]] = {}
        self._max = max(1, cache_size)

    def __repr__(self) -> str:
        return f"ConsentResolver(cached={len(self._resolved)}, max={self._max})"

    @property
    def cached(self) -> int:
        """How many resolved consents are remembered."""
        return len(self._resolved)

    def consent_for(
        self, cookie_value: str | None, gpc: bool, policy_major: int, alternatives: tuple[str, ...] = ()
    ) -> tuple[Consent, Verified | None]:
        """The consent in force, and the verified cookie it came from (None: no valid cookie)."""
        codec = self._codec
        verified = codec.decode(cookie_value) if cookie_value else None
        if alternatives:
            from .signing import most_restrictive  # signing imports this module: imported when needed

            # Several consent cookies (one per domain or path, or one planted from a sibling
            # subdomain): the valid one granting least wins, so a planted cookie can only narrow
            # what the visitor allowed, never widen it.
            verified = most_restrictive([verified, *(codec.decode(other) for other in alternatives)])
        if verified is None:
            return self._no_choice[gpc], None
        # The entry keeps its Verified alive, so its id cannot be reused while the entry exists.
        key = (id(verified), gpc, policy_major)
        entry = self._resolved.get(key)
        if entry is not None and entry[0] is verified:
            return entry[1], verified
        consent = resolve(
            verified.record,
            required=self._required,
            known=self._known,
            policy_major=policy_major,
            gpc=gpc,
            gpc_refuses=self._gpc_refuses,
        )
        resolved = self._resolved
        if len(resolved) >= self._max:
            del resolved[next(iter(resolved))]  # the oldest entry
        resolved[key] = (verified, consent)
        return consent, verified


class MajorInForce:
    """MAJOR of the privacy policy in force today, as ``major_on(day)`` gives it.

    Called on every request; looked up once per UTC day, since the policy changes at most daily:
    one float comparison per request, the date arithmetic once a day.
    """

    __slots__ = ("_major", "_major_on", "_until")

    def __init__(self, major_on: Callable[[dt.date], int]) -> None:
        self._major_on = major_on
        self._major = 0
        self._until = 0.0  # epoch seconds of the next UTC midnight, when the lookup is redone

    def __repr__(self) -> str:
        return f"MajorInForce(major={self._major}, until={self._until})"

    def __call__(self) -> int:
        if time.time() >= self._until:
            now = dt.datetime.now(dt.UTC)
            self._major = self._major_on(now.date())
            midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
            self._until = midnight.timestamp()
        return self._major
