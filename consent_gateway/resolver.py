"""Consent resolution on the request path: the consent in force for a request's cookies, cached."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from .consent import Consent, resolve
from .signing import ConsentCodec, Verified, most_restrictive


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
