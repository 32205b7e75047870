"""The policy matrix: keep, pseudonymise or drop a record (its rows are built in ``rows.py``)."""

from __future__ import annotations

import hashlib

from .consent import Consent
from .settings import Settings

KEEP = "keep"
PSEUDONYMISE = "pseudonymise"
DROP = "drop"


def withdrawn_action(action: str) -> str:
    """The action of a record whose consent id was withdrawn after it was decided: identified
    rows lose their identity (the statistics stay), anything else is unchanged."""
    return PSEUDONYMISE if action == KEEP else action


# Distinct sets of granted categories whose visit decision is remembered (2**categories at most).
_VISIT_DECISIONS = 256


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
        # A visit's fate depends only on the granted categories, and visitors share a few sets.
        self._visits: dict[frozenset[str], str] = {}

    def decide(self, kind: str, category: str, consent: Consent) -> str:
        if category in self._required:
            return KEEP
        granted, refused = self._rows.get(kind) or self._rows.get(category) or self._fallback
        return granted if consent.allows(category) else refused

    def decide_visit(self, consent: Consent) -> str:
        action = self._visits.get(consent.categories)
        if action is None:
            action = self.decide("visit", "analytics", consent)
            if len(self._visits) < _VISIT_DECISIONS:
                self._visits[consent.categories] = action
        return action

    def decide_event(self, category: str, consent: Consent) -> str:
        return self.decide(category, category, consent)


def banner_hash(*texts: str) -> str:
    """A short hash of the banner texts a visitor saw, for the receipt."""
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
