"""Bearer tokens of the analytics API, stored only as SHA-256 hashes in a JSON file under ``data_dir``.

Why a file and not a ClickHouse table: the embedded engine locks its data to one process, so
``consent-gateway keys create`` must work while the analytics app runs; the app re-reads the file
when it changes, so a revocation takes effect on the next request without a restart. A token
carries 256 random bits, so a fast hash is enough: there is nothing to brute-force.

A token reads only the sites it names. A *share* token (``keys share``) reads one site's dashboard
and the API calls the dashboard makes, nothing else; it always expires. It is handed out as a link
whose token sits in the URL fragment (``#share=…``), which browsers never send to a server or in a
``Referer``, so it stays out of access logs.

 Records written before tokens named their sites have no
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
SHARE_PREFIX = "cgs_"  # the same for read-only shared links
KINDS = ("api", "share")
# What a shared link may call: the dashboard's own reads. A new endpoint is not readable by a
# shared link until it is added here on purpose.
SHARE_ENDPOINTS = frozenset({"aggregate", "timeseries", "breakdown", "goals", "funnel", "realtime", "consent-rates"})
MAX_SHARE_DAYS = 365
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
    kind: str = "api"

    def __repr__(self) -> str:
        return (
            f"TokenRecord(name={self.name!r}, kind={self.kind!r}, sites={self.sites!r}, "
            f"expires={self.expires!r}, revoked={self.revoked!r})"
        )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TokenRecord:
        sites = data.get("sites")
        if sites is not None and not isinstance(sites, list):
            raise ValueError(f"token {data.get('name')!r}: 'sites' is {sites!r}; it must be a list of site ids")
        return cls(
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            created=str(data["created"]),
            expires=None if data.get("expires") is None else str(data["expires"]),
            revoked=None if data.get("revoked") is None else str(data["revoked"]),
            sites=None if sites is None else tuple(str(x) for x in sites),
            kind=str(data.get("kind", "api")),
        )

    def readable_sites(self, default_site: str) -> tuple[str, ...]:
        """The sites this token may read; ``default_site`` (the configured ``site_id``) for older records."""
        return self.sites if self.sites is not None else (default_site,)

    def may_read(self, site: str, default_site: str) -> bool:
        return site in self.readable_sites(default_site)

    def may_call(self, endpoint: str) -> bool:
        """API tokens call every endpoint; a shared link only what the dashboard reads."""
        return self.kind == "api" or (self.kind == "share" and endpoint in SHARE_ENDPOINTS)

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
        kind: str = "api",
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
        if kind not in KINDS:
            raise SettingsError("token kind", kind, f"use one of {', '.join(KINDS)}")
        if kind == "share" and (expires_days is None or sites is None or len(sites) != 1):
            raise SettingsError("shared link", name, "a shared link reads exactly one site and always expires")
        token = (SHARE_PREFIX if kind == "share" else TOKEN_PREFIX) + secrets.token_urlsafe(32)
        record = TokenRecord(
            name=name,
            sha256=_hash(token),
            created=now.isoformat(timespec="seconds"),
            expires=(now + dt.timedelta(days=expires_days)).isoformat(timespec="seconds") if expires_days else None,
            sites=sites,
            kind=kind,
        )
        self._write([*records, record])
        return token, record

    def create_share(
        self,
        site: str,
        *,
        expires_days: int = 30,
        name: str | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """A read-only shared link's token for one ``site``'s dashboard, expiring after ``expires_days``.

        Its name (default ``share-<site>-<6 hex digits>``) is what ``keys revoke`` takes.
        """
        if not _SITE.match(site):
            raise SettingsError("--site", site[:80], "use 1-64 letters, digits, '.', '-' or '_'")
        if not 1 <= expires_days <= MAX_SHARE_DAYS:
            raise SettingsError("--expires", expires_days, f"a shared link expires after 1 to {MAX_SHARE_DAYS} days")
        name = name or f"share-{site[:48].lstrip('._-') or 'site'}-{secrets.token_hex(3)}"
        return self.create(name, sites=(site,), expires_days=expires_days, now=now, kind="share")

    def shares(self, *, site: str | None = None, now: dt.datetime | None = None) -> tuple[TokenRecord, ...]:
        """The shared links' records (of ``site`` only when given), active, expired and revoked alike."""
        return tuple(r for r in self.records() if r.kind == "share" and (site is None or site in (r.sites or ())))

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
    if record.kind == "api":
        del data["kind"]  # API tokens are written as they were before shared links existed
    return data


def share_link(base_url: str, site: str, token: str) -> str:
    """The link to give out: the dashboard at ``base_url`` for ``site``, the token in the fragment."""
    return f"{base_url.rstrip('/')}/?site={site}#share={token}"
