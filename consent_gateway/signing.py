"""The consent cookie codec: itsdangerous signatures, key rotation, max age and a verify cache."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from itsdangerous import BadData, URLSafeTimedSerializer

from .consent import ConsentRecord

# One salt per purpose: a signature made for the consent cookie is worthless anywhere else.
COOKIE_SALT = "consent-gateway.consent-cookie.v1"
MAX_COOKIE_LENGTH = 1024
_METHOD_CODES = {"accept_all": "a", "reject_all": "r", "custom": "c", "gpc": "g"}
_METHOD_NAMES = {v: k for k, v in _METHOD_CODES.items()}


@dataclass(frozen=True, slots=True)
class Verified:
    """A cookie that verified: its record, when it was signed, and whether an older key signed it."""

    record: ConsentRecord
    signed_at: int
    stale_key: bool


class ConsentCodec:
    """Signs and verifies ``cg_consent`` values.

    ``secret_keys`` is newest last; any of them verifies, only the newest signs. Verification
    results are cached by cookie value (bounded LRU), and the age limit is checked on every call,
    so a cached cookie still expires on time.
    """

    def __init__(self, secret_keys: Sequence[str], *, max_age: int, cache_size: int = 4096) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self.max_age = max_age
        self._newest = URLSafeTimedSerializer(secret_keys[-1], salt=COOKIE_SALT)
        self._all = (
            URLSafeTimedSerializer(list(secret_keys), salt=COOKIE_SALT)
            if len(secret_keys) > 1
            else None
        )
        self._verify = lru_cache(maxsize=cache_size)(self._verify_uncached)

    def __repr__(self) -> str:
        return f"ConsentCodec(max_age={self.max_age})"

    def encode(self, record: ConsentRecord) -> str:
        payload = [
            record.consent_id,
            record.version,
            list(record.categories),
            _METHOD_CODES.get(record.method, record.method),
            record.issued_at,
        ]
        return str(self._newest.dumps(payload))

    def decode(self, value: str, now: float | None = None) -> Verified | None:
        """The verified cookie, or None for anything tampered, expired, foreign or malformed."""
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        verified = self._verify(value)
        if verified is None:
            return None
        if (now if now is not None else time.time()) - verified.signed_at > self.max_age:
            return None
        return verified

    def cache_info(self) -> object:
        return self._verify.cache_info()

    def _verify_uncached(self, value: str) -> Verified | None:
        # Ages are checked by decode() so that cached entries expire too; here max_age is off.
        stale = False
        try:
            payload, signed = self._newest.loads(value, return_timestamp=True)
        except BadData:
            if self._all is None:
                return None
            try:
                payload, signed = self._all.loads(value, return_timestamp=True)
            except BadData:
                return None
            stale = True
        except (ValueError, TypeError, json.JSONDecodeError):
            return None
        record = _record(payload)
        if record is None:
            return None
        return Verified(record, int(signed.timestamp()), stale)


def _record(payload: object) -> ConsentRecord | None:
    if not isinstance(payload, list) or len(payload) != 5:
        return None
    cid, version, cats, method, issued = payload
    if not (isinstance(cid, str) and 16 <= len(cid) <= 64):
        return None
    if not (isinstance(version, str) and version.count(".") == 1 and len(version) <= 9):
        return None
    major, _, minor = version.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    if not (isinstance(cats, list) and len(cats) <= 32 and all(isinstance(c, str) and len(c) <= 32 for c in cats)):
        return None
    if not isinstance(method, str) or method not in _METHOD_NAMES:
        return None
    if not isinstance(issued, int) or isinstance(issued, bool):
        return None
    return ConsentRecord(cid, version, tuple(cats), _METHOD_NAMES[method], issued)
