"""The consent value handed to the wrapped app as ``scope["consent"]``."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
