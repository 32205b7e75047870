"""Bearer tokens of the analytics API, stored only as SHA-256 hashes in a JSON file under ``data_dir``.

Why a file and not a ClickHouse table: the embedded engine locks its data to one process, so
``consent-gateway keys create`` must work while the analytics app runs; the app re-reads the file
when it changes, so a revocation takes effect on the next request without a restart. A token
carries 256 random bits, so a fast hash is enough: there is nothing to brute-force.

A token reads only the sites it names. Records written before tokens named their sites have no
``sites`` entry: they read only the site the app is configured for (``site_id``), never every site.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import SettingsError

TOKEN_PREFIX = "cga_"  # noqa: S105 - a recognisable prefix (secret scanners), not a secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SITE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_SITES = 64


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is kept of a token: its name, hash, dates and the sites it reads. Never the token.

    ``sites`` is None for records from before tokens named their sites: those read the configured site only.
    """

    name: str
    sha256: str
    created: str
    expires: str | None = None
    revoked: str | None = None
    sites: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"TokenRecord(name={self.name!r}, sites={self.sites!r}, expires={self.expires!r}, revoked={self.revoked!r})"
        )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TokenRecord:
        sites = data.get("sites")
        return cls(
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            created=str(data["created"]),
            expires=None if data.get("expires") is None else str(data["expires"]),
            revoked=None if data.get("revoked") is None else str(data["revoked"]),
            sites=None if sites is None else tuple(str(x) for x in sites),  # type: ignore[union-attr]
        )

    def readable_sites(self, default_site: str) -> tuple[str, ...]:
        """The sites this token may read; ``default_site`` (the configured ``site_id``) for older records."""
        return self.sites if self.sites is not None else (default_site,)

    def may_read(self, site: str, default_site: str) -> bool:
        return site in self.readable_sites(default_site)

    def status(self, now: dt.datetime) -> str:
        if self.revoked:
            return "revoked"
        if self.expires and dt.datetime.fromisoformat(self.expires) <= now:
            return "expired"
        return "active"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Create, list, revoke and verify tokens kept in one JSON file (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._records: tuple[TokenRecord, ...] = ()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    def records(self) -> tuple[TokenRecord, ...]:
        """The records as on disk now (re-read when the file changed)."""
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._mtime, self._records = None, ()
                return ()
            if mtime != self._mtime:
                data = json.loads(self.path.read_text("utf-8"))
                self._records = tuple(TokenRecord.from_json(r) for r in data.get("tokens", []))
                self._mtime = mtime
            return self._records

    def create(
        self,
        name: str,
        *,
        sites: tuple[str, ...] | list[str] | None = None,
        expires_days: int | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token named ``name`` reading ``sites`` (None: the configured site only).

        The token is returned once and only its hash is stored.
        """
        if sites is not None:
            sites = tuple(dict.fromkeys(sites))
            if not 1 <= len(sites) <= MAX_SITES:
                raise SettingsError("--site", len(sites), f"give 1 to {MAX_SITES} sites")
            for site in sites:
                if not _SITE.match(site):
                    raise SettingsError("--site", site[:80], "use 1-64 letters, digits, '.', '-' or '_'")
        if not _NAME.match(name):
            raise SettingsError(
                "token name", name, "use 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit"
            )
        if expires_days is not None and not 1 <= expires_days <= 3650:
            raise SettingsError("--expires", expires_days, "use 1 to 3650 days")
        now = now or dt.datetime.now(dt.UTC)
        records = list(self.records())
        if any(r.name == name and not r.revoked for r in records):
            raise SettingsError("token name", name, "a token of that name exists; revoke it first or pick another name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            name=name,
            sha256=_hash(token),
            created=now.isoformat(timespec="seconds"),
            expires=(now + dt.timedelta(days=expires_days)).isoformat(timespec="seconds") if expires_days else None,
            sites=sites,
        )
        self._write([*records, record])
        return token, record

    def revoke(self, name: str, *, now: dt.datetime | None = None) -> int:
        """Revoke every active token named ``name``; returns how many."""
        now = now or dt.datetime.now(dt.UTC)
        records = list(self.records())
        count = 0
        for i, r in enumerate(records):
            if r.name == name and not r.revoked:
                records[i] = replace(r, revoked=now.isoformat(timespec="seconds"))
                count += 1
        if not count:
            raise SettingsError(
                "token name", name, "no active token has that name; `consent-gateway keys list` shows them"
            )
        self._write(records)
        return count

    def verify(self, token: str, *, now: dt.datetime | None = None) -> TokenRecord | None:
        """The active record whose hash matches ``token``, else None. Every record is compared in constant time."""
        now = now or dt.datetime.now(dt.UTC)
        digest = _hash(token)
        match: TokenRecord | None = None
        for record in self.records():
            if hmac.compare_digest(record.sha256, digest):
                match = record
        if match is None or match.status(now) != "active":
            return None
        return match

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"tokens": [_as_json(r) for r in records]}, fh, indent=1)
        os.replace(tmp, self.path)


def _as_json(record: TokenRecord) -> dict[str, object]:
    data = asdict(record)
    if record.sites is None:
        del data["sites"]  # an older record stays as it was: scoped to the configured site
    else:
        data["sites"] = list(record.sites)
    return data
