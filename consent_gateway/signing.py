"""The consent cookie codec: itsdangerous signatures, key rotation, max age, the site a cookie is
bound to, revocation, and a verify cache."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from .consent import ConsentRecord
from .errors import SettingsError
from .revocation import Revocations

# One salt per purpose: a signature made for the consent cookie is worthless anywhere else.
COOKIE_SALT = "consent-gateway.consent-cookie.v1"
MAX_COOKIE_LENGTH = 1024
_METHOD_CODES = {"accept_all": "a", "reject_all": "r", "custom": "c", "gpc": "g"}
_METHOD_NAMES = {v: k for k, v in _METHOD_CODES.items()}
HOST_PREFIX = "__Host-"


@dataclass(frozen=True, slots=True)
class Verified:
    """A cookie that verified: its record, when it was signed, and whether an older key signed it."""

    record: ConsentRecord
    signed_at: int
    stale_key: bool
    site_bound: bool = True

    def expires_at(self, max_age: int) -> int:
        """When this cookie stops being honoured (a re-issued cookie keeps this date)."""
        return self.signed_at + max_age


class _SignerAt(TimestampSigner):
    """A TimestampSigner that stamps a given time: re-issuing keeps a cookie's original age."""

    def __init__(self, *args: Any, at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._at = at

    def get_timestamp(self) -> int:
        return self._at


class ConsentCodec:
    """Signs and verifies ``cg_consent`` values.

    ``secret_keys`` is newest last; any of them verifies, only the newest signs. Verification
    results are cached by cookie value (bounded LRU), and the age limit and the revocation list are
    checked on every call, so a cached cookie still expires and is still revoked on time.

    Every cookie carries ``site_id``: a cookie another site signed with the same keys is not
    honoured. Cookies from before the site was carried (five fields) are honoured as this site's
    while ``accept_unbound`` is on (the default, for the one max age after an upgrade in which they
    can still be valid); turn it off once that has passed.
    """

    def __init__(
        self,
        secret_keys: Sequence[str],
        *,
        max_age: int,
        cache_size: int = 4096,
        site_id: str = "default",
        revocations: Revocations | None = None,
        accept_unbound: bool = True,
    ) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self.max_age = max_age
        self.site_id = site_id
        self.revocations = revocations
        self.accept_unbound = accept_unbound
        self._newest_key = secret_keys[-1]
        self._newest = URLSafeTimedSerializer(secret_keys[-1], salt=COOKIE_SALT)
        self._all = URLSafeTimedSerializer(list(secret_keys), salt=COOKIE_SALT) if len(secret_keys) > 1 else None
        self._verify = lru_cache(maxsize=cache_size)(self._verify_uncached)

    def __repr__(self) -> str:
        return f"ConsentCodec(max_age={self.max_age}, site_id={self.site_id!r})"

    def _payload(self, record: ConsentRecord) -> list[object]:
        return [
            record.consent_id,
            record.version,
            list(record.categories),
            _METHOD_CODES.get(record.method, record.method),
            record.issued_at,
            self.site_id,
        ]

    def encode(self, record: ConsentRecord) -> str:
        """A new cookie value for a choice made now, signed with the newest key."""
        return str(self._newest.dumps(self._payload(record)))

    def reissue(self, verified: Verified) -> str:
        """``verified`` signed again with the newest key and its ORIGINAL time: key rotation moves
        a cookie to the new key without resetting its max age (or reviving a revoked id: decode
        refuses those before anything can be re-issued)."""
        serializer = URLSafeTimedSerializer(
            self._newest_key, salt=COOKIE_SALT, signer=_SignerAt, signer_kwargs={"at": verified.signed_at}
        )
        return str(serializer.dumps(self._payload(verified.record)))

    def decode(self, value: str, now: float | None = None) -> Verified | None:
        """The verified cookie, or None for anything tampered, expired, revoked, another site's
        or malformed."""
        if not value or len(value) > MAX_COOKIE_LENGTH:
            return None
        verified = self._verify(value)
        if verified is None:
            return None
        if (now if now is not None else time.time()) - verified.signed_at > self.max_age:
            return None
        if not verified.site_bound and not self.accept_unbound:
            return None
        if self.revocations is not None and self.revocations.is_revoked(verified.record.consent_id):
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
        if isinstance(payload, list) and len(payload) == 6:
            if payload[5] != self.site_id:
                return None
            payload, bound = payload[:5], True
        else:
            bound = False
        record = _record(payload)
        if record is None:
            return None
        return Verified(record, int(signed.timestamp()), stale, bound)


def most_restrictive(candidates: Iterable[Verified | None]) -> Verified | None:
    """Of several valid consent cookies, the one granting least: fewest categories, then a refusal
    (``reject_all``, ``gpc``) over other methods, then the newest. A cookie planted from a sibling
    subdomain can then only narrow what the visitor allowed, never widen it."""
    best: Verified | None = None
    best_key: tuple[int, int, int] | None = None
    for candidate in candidates:
        if candidate is None:
            continue
        record = candidate.record
        key = (len(record.categories), 0 if record.method in ("reject_all", "gpc") else 1, -record.issued_at)
        if best_key is None or key < best_key:
            best, best_key = candidate, key
    return best


def consent_cookie_name(name: str, *, host_prefix: bool, secure: bool, domain: str) -> str:
    """The cookie name in use: ``name``, or ``__Host-`` + ``name`` when ``host_prefix`` is on.

    A ``__Host-`` cookie is set only over HTTPS, for the exact host and ``Path=/``: a sibling
    subdomain cannot plant or overwrite it. Browsers refuse it with ``Domain`` or without ``Secure``,
    so those combinations are configuration errors.
    """
    if not host_prefix:
        return name
    if domain:
        raise SettingsError(
            "cookie_domain", domain, "a __Host- consent cookie cannot carry a Domain; leave cookie_domain empty"
        )
    if not secure:
        raise SettingsError("cookie_secure", secure, "a __Host- consent cookie needs cookie_secure = true (HTTPS)")
    return name if name.startswith(HOST_PREFIX) else HOST_PREFIX + name


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
