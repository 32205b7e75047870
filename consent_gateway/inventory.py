"""A live inventory of the cookie names the site sets and browsers send back (names only, never values).

The gateway sees every ``Set-Cookie`` the app sends and every ``Cookie`` header browsers send, on real
traffic. ``CookieInventory`` counts them in memory, bounded in names and bytes, and ``flush_inventory``
writes the counts as one aggregate row per day and name to the ``cookie_inventory`` table (no visitor
keys, a TTL like the events'). ``read_inventory`` merges those rows back for the CLI and the declaration.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge

from .children import CHILD_COOKIE
from .cookies import request_cookie_names, set_cookie_name
from .registry import CategoryRegistry, Source
from .store.client import Store
from .store.schema import INVENTORY_COLUMNS as COLUMNS
from .store.schema import INVENTORY_TABLE as TABLE
from .store.schema import inventory_ddl
from .store.statements import cookie_inventory_rows

if TYPE_CHECKING:
    from .settings import Settings

SESSION = -1
"""``lifetime_seconds`` of a cookie set without Max-Age or Expires (it ends with the browser session)."""

# The sources a row names: the registry's three (registry.Source), and the gateway's own cookies.
SOURCE_REGISTRY = Source.REGISTRY.value
SOURCE_CATALOGUE = Source.CATALOGUE.value
SOURCE_UNCLASSIFIED = Source.UNCLASSIFIED.value
SOURCE_GATEWAY = "gateway"

MAX_NAME_CHARS = 128
MAX_PATH_CHARS = 200
MAX_ATTRIBUTES_CHARS = 256
PATH_SLOTS = 8
TOP_PATHS = 5


# A returning visitor sends the same Cookie header page after page: its names are read once.
# At most this many headers of at most COOKIE_CACHE_BYTES each are kept (1 MiB in all).
COOKIE_CACHE_SIZE = 256
COOKIE_CACHE_BYTES = 4096
# Requests are tallied by their Cookie header's names and the visitor's categories, and the tallies
# added to the names' counts when read: at most this many tallies wait (each of at most
# COOKIE_CACHE_BYTES of names; a longer header is counted at once).
PENDING_REQUESTS = 256


def _distinct_names(header: bytes) -> tuple[str, ...]:
    return tuple(dict.fromkeys(request_cookie_names(header.decode("latin-1"))))


_cached_names = lru_cache(maxsize=COOKIE_CACHE_SIZE)(_distinct_names)


def cookie_names(header: bytes) -> tuple[str, ...]:
    """The distinct cookie names of one Cookie header, in order."""
    return _cached_names(header) if len(header) <= COOKIE_CACHE_BYTES else _distinct_names(header)


CatalogueLookup = Callable[[str], Any]
"""name -> (provider, category, purpose_ko, purpose_en, lifetime) or None; lifetime: words or seconds."""


def no_catalogue(name: str) -> None:
    """The lookup used when no catalogue is installed: it knows no names."""
    return None


def installed_catalogue() -> CatalogueLookup:
    """The lookup of the catalogue shipped with the package (``Catalogue.load().lookup``)."""
    from .catalogue import Catalogue

    lookup: CatalogueLookup = Catalogue.load().lookup
    return lookup


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One catalogue answer, read from whatever sequence the catalogue returns."""

    provider: str
    category: str
    purpose_ko: str
    purpose_en: str
    lifetime: str | int
    """Words ("2 years") or seconds; a declaration turns seconds into words in each language."""

    @classmethod
    def from_hit(cls, hit: Any) -> CatalogueEntry | None:
        """From a 5-sequence, or an object with those five attributes; None stays None."""
        if hit is None:
            return None
        fields = ("provider", "category", "purpose_ko", "purpose_en", "lifetime")
        if all(hasattr(hit, f) for f in fields):
            provider, category, purpose_ko, purpose_en, lifetime = (getattr(hit, f) for f in fields)
        else:
            provider, category, purpose_ko, purpose_en, lifetime = (hit[i] for i in range(5))
        life = lifetime if isinstance(lifetime, int) and not isinstance(lifetime, bool) else str(lifetime)
        return cls(str(provider), str(category), str(purpose_ko), str(purpose_en), life)


class _LookupCatalogue:
    """A catalogue lookup function as the registry asks a catalogue: ``lookup(name)``."""

    __slots__ = ("_lookup",)

    def __init__(self, lookup: CatalogueLookup) -> None:
        self._lookup = lookup

    def lookup(self, name: str) -> CatalogueEntry | None:
        return CatalogueEntry.from_hit(self._lookup(name))


class Classifier:
    """Sorts a cookie name into a category and says where that came from, as the inventory records it.

    The category and its source are the registry's answer (``registry.CategoryRegistry``: the site's
    registry, then the catalogue, then ``unknown_category``; bounded in names and bytes); what is the
    inventory's own is the source ``gateway`` for the gateway's ``fixed`` cookies, answers as plain
    ``(category, source)`` strings, and the catalogue's whole entry for declarations
    (``catalogue_entry``). Unknown names are counted by the inventory, never logged.
    """

    def __init__(
        self,
        registry: Sequence[tuple[str, str]],
        *,
        unknown_category: str,
        catalogue: CatalogueLookup = no_catalogue,
        fixed: Mapping[str, str] | None = None,
        cache_size: int = 4096,
    ) -> None:
        self._fixed = dict(fixed or {})
        self._catalogue = catalogue
        self.unknown_category = unknown_category
        self.registry = CategoryRegistry(
            registry,
            unknown_category=unknown_category,
            catalogue=None if catalogue is no_catalogue else _LookupCatalogue(catalogue),
            cache_size=cache_size,
            warn_unknown=False,
        )

    def __repr__(self) -> str:
        return f"Classifier({self.registry!r}, {len(self._fixed)} gateway names)"

    def classify(self, name: str) -> tuple[str, str]:
        """``(category, source)`` of ``name``: one of the ``SOURCE_*`` strings."""
        fixed = self._fixed.get(name)
        if fixed is not None:
            return fixed, SOURCE_GATEWAY
        found = self.registry.classify(name)
        return found.category, found.source.value

    def catalogue_entry(self, name: str) -> CatalogueEntry | None:
        """The catalogue's entry for ``name`` (None when the catalogue does not know it)."""
        return CatalogueEntry.from_hit(self._catalogue(name))

    @classmethod
    def over(
        cls, registry: CategoryRegistry, *, catalogue: CatalogueLookup = no_catalogue, fixed: Mapping[str, str]
    ) -> Classifier:
        """A classifier that asks ``registry`` itself (one cache, one set of rules): a running gateway's
        inventory classifies with the registry that enforces. ``fixed``: the gateway's own cookies."""
        classifier = cls.__new__(cls)
        classifier._fixed = dict(fixed)
        classifier._catalogue = catalogue
        classifier.unknown_category = registry.unknown_category
        classifier.registry = registry
        return classifier

    @classmethod
    def from_settings(cls, settings: Settings, catalogue: CatalogueLookup = no_catalogue) -> Classifier:
        """The classifier of a gateway's settings, over the registry the gateway enforces with
        (``cookie_registry``), for commands and the analytics app that run without a gateway."""
        registry = cookie_registry(settings, catalogue, warn_unknown=False)
        return cls.over(registry, catalogue=catalogue, fixed=gateway_cookies(settings))


def gateway_cookies(settings: Settings) -> dict[str, str]:
    """The gateway's own cookies and their category: the consent (under the name browsers send it
    back, "__Host-" prefixed when configured) and the mark of a child under 14 (children.py)."""
    required = next(iter(sorted(settings.required_categories)))
    return dict.fromkeys((settings.consent_cookie_name, CHILD_COOKIE), required)


def cookie_registry(
    settings: Settings, catalogue: CatalogueLookup = no_catalogue, *, warn_unknown: bool = True
) -> CategoryRegistry:
    """The cookie registry of ``settings``: the site's own table, the gateway's cookies fixed, then
    (``catalogue``) well-known names whose category the site has, then the unknown category. The
    gateway enforces with it and its inventory classifies with it (``Classifier.over``)."""
    return CategoryRegistry(
        settings.cookie.registry,
        unknown_category=settings.cookie.unknown_category,
        fixed=gateway_cookies(settings),
        catalogue=None if catalogue is no_catalogue else _LookupCatalogue(catalogue),
        categories=settings.category_keys,
        warn_unknown=warn_unknown,
    )


@dataclass(frozen=True, slots=True)
class CookieAttributes:
    """A Set-Cookie's attributes as the app set them (``lifetime_seconds``: -1 for a session cookie)."""

    domain: str = ""
    path: str = ""
    lifetime_seconds: int = SESSION
    http_only: bool = False
    secure: bool = False
    same_site: str = ""

    @classmethod
    def from_set_cookie(cls, header_value: str | bytes, now: float | None = None) -> CookieAttributes:
        """Read the attributes of one Set-Cookie value; unknown or malformed attributes are ignored."""
        if isinstance(header_value, bytes):
            header_value = header_value.decode("latin-1")
        domain = path = same_site = ""
        http_only = secure = False
        max_age: int | None = None
        expires: int | None = None
        for part in header_value.split(";")[1:]:
            key, _, value = part.partition("=")
            key = key.strip(" \t").lower()
            value = value.strip(" \t")
            if key == "domain":
                domain = value.lstrip(".").lower()[:MAX_NAME_CHARS]
            elif key == "path":
                path = value[:MAX_PATH_CHARS]
            elif key == "max-age":
                try:
                    max_age = max(0, int(value))
                except ValueError:
                    pass
            elif key == "expires":
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError, IndexError):
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
                expires = max(0, int(when.timestamp() - (time.time() if now is None else now)))
            elif key == "httponly":
                http_only = True
            elif key == "secure":
                secure = True
            elif key == "samesite":
                same_site = value.capitalize()[:8]
        # Max-Age wins over Expires (RFC 6265 5.3, step 3).
        lifetime = max_age if max_age is not None else expires if expires is not None else SESSION
        return cls(domain, path, lifetime, http_only, secure, same_site)


@dataclass(slots=True)
class _Entry:
    """Counts of one name since the last flush (mutable; lives only inside the inventory's lock)."""

    category: str
    source: str
    first_seen: int
    last_seen: int
    set_count: int = 0
    request_count: int = 0
    blocked: int = 0
    before_consent: int = 0
    # The Set-Cookie's attributes as sent (the text after the value), parsed only when drained.
    attributes: str | None = None
    attributes_at: int = 0
    paths: dict[str, int] = field(default_factory=dict)

    def add_path(self, path: str) -> None:
        # Space-saving: a new path on full slots takes the least counted one's place (and its count),
        # so the top few paths stay right while the slots stay bounded.
        if path in self.paths or len(self.paths) < PATH_SLOTS:
            self.paths[path] = self.paths.get(path, 0) + 1
            return
        low = min(self.paths, key=self.paths.__getitem__)
        self.paths[path] = self.paths.pop(low) + 1


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One aggregate row of ``cookie_inventory``: one day, one name."""

    day: dt.date
    name: str
    category: str
    source: str
    set_count: int
    request_count: int
    blocked: int
    before_consent: int
    first_seen: int
    last_seen: int
    attributes: CookieAttributes | None
    paths: tuple[tuple[str, int], ...]
    overflow: int = 0


class CookieInventory:
    """Counts cookie names seen in responses and requests, bounded in names and bytes; thread-safe.

    At most ``max_names`` distinct names are held between flushes, and at most ``max_bytes`` of names
    and paths; names beyond either are counted in ``overflow`` only. Names and paths are cut to
    ``MAX_NAME_CHARS`` and ``MAX_PATH_CHARS``, and each name keeps at most ``PATH_SLOTS`` paths.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_names: int = 2000,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_names < 1 or max_bytes < 1:
            raise ValueError(f"max_names ({max_names}) and max_bytes ({max_bytes}) must be at least 1")
        self.classifier = classifier
        self.max_names = max_names
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._bytes = 0
        self._overflow = 0
        # Names ever found unclassified by this process (bounded like the entries), for the gauge.
        self._unclassified: set[str] = set()
        # Requests not yet added to their names' counts: (names, granted) -> [requests, first, last].
        self._requests: dict[tuple[tuple[str, ...], frozenset[str]], list[int]] = {}

    def __repr__(self) -> str:
        return f"CookieInventory({len(self._entries)} names, overflow={self._overflow})"

    @property
    def overflow(self) -> int:
        """Sightings of names refused since the last flush because a bound was reached."""
        with self._lock:
            self._add_requests()
            return self._overflow

    def unclassified_count(self) -> int:
        """Distinct names neither the registry nor the catalogue knows, seen by this process."""
        with self._lock:
            self._add_requests()
            return len(self._unclassified)

    def observe_set_cookie(self, header_value: str | bytes, *, path: str, granted: bool, blocked: bool) -> None:
        """Count one Set-Cookie of the app: ``granted``: the visitor had granted its category;
        ``blocked``: the gateway removed it."""
        if isinstance(header_value, bytes):
            header_value = header_value.decode("latin-1")
        name = set_cookie_name(header_value)
        # Only what follows the value is kept; parsing it waits for the flush, once per name.
        attributes = header_value.partition(";")[2][:MAX_ATTRIBUTES_CHARS]
        now = int(self._clock())
        with self._lock:
            entry = self._entry(name, now)
            if entry is None:
                return
            entry.set_count += 1
            entry.blocked += int(blocked)
            entry.before_consent += int(not granted)
            entry.attributes = attributes
            entry.attributes_at = now
            self._add_path(entry, path)

    def observe_cookie_header(self, header: bytes, granted: frozenset[str]) -> None:
        """Count one request's Cookie header, for a visitor who granted ``granted``.

        A site's visitors send a few shapes of header page after page: the request is tallied by
        its names and categories, and tallies reach the names' counts when the counts are read.
        """
        names = cookie_names(header)
        now = int(self._clock())
        with self._lock:
            if len(header) > COOKIE_CACHE_BYTES:  # too long to wait as a tally
                self._count_requests(names, granted, 1, now, now)
                return
            key = (names, granted)
            tally = self._requests.get(key)
            if tally is not None:
                tally[0] += 1
                tally[2] = now
                return
            if len(self._requests) >= PENDING_REQUESTS:
                self._add_requests()
            self._requests[key] = [1, now, now]

    def observe_request_cookies(self, names: Iterable[str], *, path: str, granted: Iterable[str]) -> None:
        """Count the cookie names of one request's Cookie header, for a visitor who granted ``granted``."""
        allowed = granted if isinstance(granted, frozenset) else frozenset(granted)
        now = int(self._clock())
        with self._lock:
            self._count_requests(tuple(dict.fromkeys(names)), allowed, 1, now, now)

    def _add_requests(self) -> None:
        """Add the waiting tallies to the names' counts (the lock held)."""
        requests, self._requests = self._requests, {}
        for (names, granted), (count, first, last) in requests.items():
            self._count_requests(names, granted, count, first, last)

    def _count_requests(
        self, names: tuple[str, ...], granted: frozenset[str], count: int, first: int, last: int
    ) -> None:
        for name in names:
            entry = self._entry(name, last, count)
            if entry is None:
                continue
            entry.first_seen = min(entry.first_seen, first)
            entry.request_count += count
            if entry.category != "necessary" and entry.category not in granted:
                entry.before_consent += count

    def _entry(self, name: str, now: int, sightings: int = 1) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is None and len(name) > MAX_NAME_CHARS:
            name = name[:MAX_NAME_CHARS]
            entry = self._entries.get(name)
        if entry is not None:
            entry.last_seen = max(entry.last_seen, now)
            return entry
        # Counted at its largest: the attributes text it may hold later is bounded too.
        size = len(name.encode("utf-8", "surrogatepass")) + 64 + MAX_ATTRIBUTES_CHARS
        if len(self._entries) >= self.max_names or self._bytes + size > self.max_bytes:
            self._overflow += sightings
            return None
        category, source = self.classifier.classify(name)
        if source == SOURCE_UNCLASSIFIED and len(self._unclassified) < self.max_names:
            self._unclassified.add(name)
        entry = self._entries[name] = _Entry(category, source, now, now)
        self._bytes += size
        return entry

    def _add_path(self, entry: _Entry, path: str) -> None:
        path = path[:MAX_PATH_CHARS]
        if path not in entry.paths:
            size = len(path.encode("utf-8", "surrogatepass")) + 16
            if len(entry.paths) < PATH_SLOTS:
                if self._bytes + size > self.max_bytes:
                    return
                self._bytes += size
        entry.add_path(path)

    def drain(self) -> list[InventoryRow]:
        """Take the counts gathered since the last drain as rows, and start counting afresh."""
        with self._lock:
            self._add_requests()
            entries, self._entries = self._entries, {}
            overflow, self._overflow = self._overflow, 0
            self._bytes = 0
            now = int(self._clock())
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        rows = [
            InventoryRow(
                day,
                name,
                e.category,
                e.source,
                e.set_count,
                e.request_count,
                e.blocked,
                e.before_consent,
                e.first_seen,
                e.last_seen,
                None if e.attributes is None else CookieAttributes.from_set_cookie(";" + e.attributes, e.attributes_at),
                tuple(sorted(e.paths.items(), key=lambda kv: -kv[1])),
            )
            for name, e in entries.items()
        ]
        if overflow:
            rows.append(InventoryRow(day, "", "", "overflow", 0, 0, 0, 0, now, now, None, (), overflow))
        return rows


def watch_unclassified(inventory: CookieInventory, registry: CollectorRegistry) -> Gauge:
    """A gauge ``cg_cookie_unclassified_names`` on ``registry`` that reads ``inventory`` when scraped."""
    gauge = Gauge(
        "cg_cookie_unclassified_names",
        "Distinct cookie names seen that neither the registry nor the catalogue knows",
        registry=registry,
    )
    gauge.set_function(inventory.unclassified_count)
    return gauge


# -- ClickHouse ------------------------------------------------------------------------------------


def create_inventory_table(store: Store, *, events_months: int = 3) -> None:
    """Create ``cookie_inventory`` when it is missing (safe to run again)."""
    for statement in inventory_ddl(store, events_months=events_months):
        store.command(statement)


def _line(site: str, row: InventoryRow) -> bytes:
    a = row.attributes
    paths = [[p for p, _ in row.paths], [c for _, c in row.paths]]
    values = [
        row.day.isoformat(),
        site,
        row.name,
        row.category,
        row.source,
        row.set_count,
        row.request_count,
        row.blocked,
        row.before_consent,
        row.overflow,
        row.first_seen,
        row.last_seen,
        a.domain if a else "",
        a.path if a else "",
        a.lifetime_seconds if a else SESSION,
        int(a.http_only) if a else 0,
        int(a.secure) if a else 0,
        a.same_site if a else "",
        paths,
    ]
    return json.dumps(values, ensure_ascii=False).encode("utf-8", "surrogatepass")


def flush_inventory(store: Store, inventory: CookieInventory, site: str) -> int:
    """Write what ``inventory`` gathered since the last flush; returns the rows written.

    On a ClickHouse error the counts are lost (they are statistics, not records) and the error is raised.
    """
    rows = inventory.drain()
    if rows:
        store.insert_lines(TABLE, [_line(site, r) for r in rows], [n for n, _ in COLUMNS])
    return len(rows)


@dataclass(frozen=True, slots=True)
class CookieSummary:
    """One cookie name over the days read: what the CLI, the gauge and the declaration show."""

    name: str
    category: str
    source: str
    set_count: int
    request_count: int
    blocked: int
    before_consent: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    domain: str
    cookie_path: str
    lifetime_seconds: int
    http_only: bool
    secure: bool
    same_site: str
    top_paths: tuple[tuple[str, int], ...]

    @property
    def set_by(self) -> str:
        """Who set it: ``server`` (the app's responses) or ``script`` (seen only in requests)."""
        return "server" if self.set_count else "script"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "source": self.source,
            "set_by": self.set_by,
            "set_count": self.set_count,
            "request_count": self.request_count,
            "blocked": self.blocked,
            "before_consent": self.before_consent,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "domain": self.domain,
            "path": self.cookie_path,
            "lifetime_seconds": self.lifetime_seconds,
            "http_only": self.http_only,
            "secure": self.secure,
            "same_site": self.same_site,
            "top_paths": [{"path": p, "count": c} for p, c in self.top_paths],
        }


@dataclass(frozen=True, slots=True)
class InventoryReport:
    """Every name seen over ``days`` days, and how many sightings the bounds refused."""

    cookies: tuple[CookieSummary, ...]
    overflow: int

    def unclassified(self) -> tuple[CookieSummary, ...]:
        return tuple(c for c in self.cookies if c.source == SOURCE_UNCLASSIFIED)


def read_inventory(store: Store, site: str, *, days: int = 90) -> InventoryReport:
    """The inventory of ``site`` over the last ``days`` days, merged across days and flushes."""
    rows = cookie_inventory_rows(store, TABLE, site, days)
    cookies = []
    overflow = 0
    for r in rows:
        if r[2] == "overflow":
            overflow += int(r[7])
            continue
        paths = sorted(zip(r[16][0], r[16][1], strict=True), key=lambda pc: (-pc[1], pc[0]))[:TOP_PATHS]
        cookies.append(
            CookieSummary(
                name=r[0],
                category=r[1],
                source=r[2],
                set_count=int(r[3]),
                request_count=int(r[4]),
                blocked=int(r[5]),
                before_consent=int(r[6]),
                first_seen=_utc(r[8]),
                last_seen=_utc(r[9]),
                domain=r[10],
                cookie_path=r[11],
                lifetime_seconds=int(r[12]) if int(r[3]) else SESSION,
                http_only=bool(r[13]),
                secure=bool(r[14]),
                same_site=r[15],
                top_paths=tuple((str(p), int(c)) for p, c in paths),
            )
        )
    return InventoryReport(tuple(cookies), overflow)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
