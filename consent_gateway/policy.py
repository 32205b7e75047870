"""The policy: the one decision (keep / pseudonymise / drop) per record (its rows are built in ``rows.py``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .consent import Consent, ConsentStatus
from .pseudonymize import reduce_user_agent
from .registry import CategoryRegistry
from .settings import Settings

KEEP = "keep"
PSEUDONYMISE = "pseudonymise"
DROP = "drop"

VISIT = "visit"
EVENT = "event"

# Distinct sets of granted categories whose visit decision is remembered, given consents and
# others apart (2**categories each at most).
_VISIT_DECISIONS = 256


@dataclass(frozen=True, slots=True)
class Decision:
    """What happens to one record: stored under ``category`` as ``action``.

    ``action`` is ``keep`` only when the record is identified (stored with the visitor key of
    the consent id); everything else is ``pseudonymise``. Records that are dropped get no Decision.
    """

    category: str
    action: str
    identified: bool

    def consent_id(self, consent: Consent) -> str | None:
        """The consent id the record carries: the visitor's when it is identified, else none."""
        return consent.consent_id if self.identified else None

    def without_identity(self) -> Decision:
        """The decision once the record's consent id is withdrawn: the statistics stay, the identity goes."""
        return Decision(self.category, withdrawn(self.action), False)


def withdrawn(action: str) -> str:
    """The action of a record whose consent id was withdrawn after it was decided.

    Withdrawal erases identities, not statistics: such a record is stored pseudonymised.
    """
    return PSEUDONYMISE if action in (KEEP, PSEUDONYMISE) else action


class Policy:
    """The one place that decides what happens to a visit or an event for a given consent.

    Visits are governed by the visit category (setting ``visit_category``) under the ``visit``
    row of the matrix; an event by its registered category under that category's row. A
    category with no row of its own uses the visit category's row. Required categories are
    always kept. A KEEP is identified only under a given consent: without one (unset or
    outdated) the record is stored pseudonymised. With ``drop_bots`` a bot's records are dropped.
    """

    def __init__(self, settings: Settings, events: CategoryRegistry | None = None) -> None:
        self._rows = {kind: (granted, refused) for kind, granted, refused in settings.policy_matrix}
        self._required = settings.required_categories
        self._visit_category = settings.visit_category
        self._fallback = self._rows.get(settings.visit_category, (KEEP, PSEUDONYMISE))
        self._drop_bots = settings.drop_bots
        if events is None:
            events = CategoryRegistry(
                settings.event_registry,
                unknown_category=settings.unknown_event_category,
                label="event",
                section="events",
            )
        self._category_of = events.category_of
        # A visit's fate depends only on the granted categories and whether the consent is given,
        # and visitors share a few of those: one table for given consents, one for the others.
        self._given_visits: dict[frozenset[str], Decision | None] = {}
        self._other_visits: dict[frozenset[str], Decision | None] = {}
        self._identified: dict[str, Decision] = {}
        self._pseudonymised: dict[str, Decision] = {}

    def __repr__(self) -> str:
        return f"Policy(rows={self._rows!r}, visit_category={self._visit_category!r})"

    def decide(self, kind: str, name: str, consent: Consent, user_agent: str) -> Decision | None:
        """The decision for a record of ``kind`` (``visit`` or ``event``) named ``name``; None drops it."""
        if self._drop_bots and reduce_user_agent(user_agent).is_bot:
            return None  # crawlers and headless browsers are not visitors (SECURITY.md)
        given = consent.status is ConsentStatus.GIVEN
        if kind == VISIT:
            visits = self._given_visits if given else self._other_visits
            try:
                return visits[consent.categories]
            except KeyError:
                decision = self._decision(VISIT, self._visit_category, consent, given)
                if len(visits) < _VISIT_DECISIONS:
                    visits[consent.categories] = decision
                return decision
        category = self._category_of(name)
        return self._decision(category, category, consent, given)

    def _decision(self, row: str, category: str, consent: Consent, given: bool) -> Decision | None:
        if category in self._required:
            action = KEEP
        else:
            granted, refused = self._rows.get(row) or self._rows.get(category) or self._fallback
            action = granted if consent.allows(category) else refused
        if action == DROP:
            return None
        identified = action == KEEP and given
        # Decisions are values: one per category and outcome, shared by every request. Categories
        # come from the settings (registered or unknown), so these tables stay small.
        shared = self._identified if identified else self._pseudonymised
        decision = shared.get(category)
        if decision is None:
            decision = shared[category] = Decision(category, KEEP if identified else PSEUDONYMISE, identified)
        return decision


def banner_hash(*texts: str) -> str:
    """A short hash of the banner texts a visitor saw, for the receipt."""
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
