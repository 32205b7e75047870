"""Well-known cookies: which category a framework's, CDN's or vendor's cookie belongs to.

The data ships in the package (``consent_gateway/cookie_catalogue.toml``): framework session and CSRF
cookies and load-balancer affinity cookies as necessary, the usual analytics and advertising
cookies in their categories. It is a fallback only: a site's own cookie registry always wins.

Lookup: an exact name first; otherwise the matching pattern with the most literal characters
(``_hjSession_*`` before ``_hj*``), the earlier entry on a tie.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .settings import DEFAULT_CATEGORIES

# The categories an entry may name: the keys of the gateway's default categories.
CATEGORY_KEYS = tuple(c.key for c in DEFAULT_CATEGORIES)
# Distinct names remembered by lookup(); longer names are answered but not remembered, so the
# cache holds at most LOOKUP_CACHE_SIZE * CACHED_NAME_MAX characters of names.
LOOKUP_CACHE_SIZE = 2048
CACHED_NAME_MAX = 128
_FIELDS = ("name", "provider", "category", "purpose_ko", "purpose_en", "lifetime")
_OPTIONAL = ("note",)
# RFC 6265 cookie-name characters (a token), plus the glob's "*" and "?".
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z?]+")


@dataclass(frozen=True, slots=True)
class Entry:
    """One well-known cookie (or family of cookies, when ``name`` is a glob)."""

    name: str
    provider: str
    category: str
    purpose_ko: str
    purpose_en: str
    lifetime: str
    note: str = ""

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name or "?" in self.name

    @property
    def specificity(self) -> int:
        """The literal characters of the name: among matching patterns the highest wins."""
        return len(self.name) - self.name.count("*") - self.name.count("?")

    def purpose(self, locale: str) -> str:
        """The purpose in "ko" or (any other locale) "en"."""
        return self.purpose_ko if locale == "ko" else self.purpose_en


class Catalogue:
    """The well-known cookies, looked up by name; iterating yields the entries in file order."""

    def __init__(self, entries: Iterable[Entry], *, source: str = "<entries>") -> None:
        self.source = source
        self._entries = tuple(entries)
        self._exact: dict[str, Entry] = {}
        patterns: list[tuple[int, int, re.Pattern[str], Entry]] = []
        seen: set[str] = set()
        for index, entry in enumerate(self._entries):
            _check(entry, f"{source}: cookie {index + 1}")
            if entry.name in seen:
                raise SettingsError(f"{source}: cookie {index + 1}.name", entry.name, "list each name or pattern once")
            seen.add(entry.name)
            if entry.is_pattern:
                patterns.append((-entry.specificity, index, _glob(entry.name), entry))
            else:
                self._exact[entry.name] = entry
        # Most specific first, file order on a tie: the first pattern that matches is the answer.
        patterns.sort(key=lambda p: (p[0], p[1]))
        self._patterns = tuple((regex, entry) for _s, _i, regex, entry in patterns)
        self._cached = lru_cache(maxsize=LOOKUP_CACHE_SIZE)(self._find)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        """The catalogue shipped in the package, or the one at ``path``; parsed once per path."""
        return _load(None if path is None else str(path))

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<toml>") -> Catalogue:
        """A catalogue from TOML text of ``[[cookie]]`` tables (see cookie_catalogue.toml)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(source, str(exc), "fix the TOML syntax at the line named") from None
        rows = data.get("cookie")
        if not isinstance(rows, list) or not rows:
            raise SettingsError(f"{source}: cookie", rows, "write one or more [[cookie]] tables")
        unknown = set(data) - {"cookie"}
        if unknown:
            key = sorted(unknown)[0]
            raise SettingsError(f"{source}: {key}", data[key], "only [[cookie]] tables belong in the file")
        return cls((_entry(row, i, source) for i, row in enumerate(rows)), source=source)

    def __repr__(self) -> str:
        return f"Catalogue({len(self._entries)} entries from {self.source})"

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str) -> Entry | None:
        """The entry for a cookie name: exact first, then the most specific pattern; None if unknown."""
        if len(name) > CACHED_NAME_MAX:
            return self._find(name)
        return self._cached(name)

    def category_of(self, name: str) -> str | None:
        """The category of a cookie name, or None when the catalogue does not know it."""
        entry = self.lookup(name)
        return entry.category if entry is not None else None

    def lookup_cache_info(self) -> object:
        """Hits, misses and size of the remembered lookups."""
        return self._cached.cache_info()

    def _find(self, name: str) -> Entry | None:
        entry = self._exact.get(name)
        if entry is not None:
            return entry
        for regex, candidate in self._patterns:
            if regex.fullmatch(name):
                return candidate
        return None


@lru_cache(maxsize=8)
def _load(path: str | None) -> Catalogue:
    if path is None:
        source = "consent_gateway/cookie_catalogue.toml"
        text = resources.files("consent_gateway").joinpath("cookie_catalogue.toml").read_text("utf-8")
    else:
        source = path
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise SettingsError(
                "catalogue", path, f"cannot read it ({exc.strerror}); give a readable TOML file"
            ) from None
    return Catalogue.from_toml(text, source=source)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern))


def _entry(row: Any, index: int, source: str) -> Entry:
    where = f"{source}: cookie {index + 1}"
    if not isinstance(row, dict):
        raise SettingsError(where, row, "write it as a [[cookie]] table")
    unknown = set(row) - set(_FIELDS) - set(_OPTIONAL)
    if unknown:
        key = sorted(unknown)[0]
        raise SettingsError(f"{where}.{key}", row[key], f"allowed keys: {', '.join(_FIELDS + _OPTIONAL)}")
    for key in _FIELDS:
        if key not in row:
            raise SettingsError(f"{where}.{key}", None, f"give {key} (every entry needs {', '.join(_FIELDS)})")
    for key, value in row.items():
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{where}.{key}", value, "give a non-empty string")
    return Entry(**row)


def _check(entry: Entry, where: str) -> None:
    if not _NAME.fullmatch(entry.name):
        raise SettingsError(
            f"{where}.name", entry.name, "use cookie-name characters, with * or ? as the only wildcards"
        )
    if entry.is_pattern and entry.specificity < 2:
        raise SettingsError(f"{where}.name", entry.name, "give a pattern at least two literal characters long")
    if entry.category not in CATEGORY_KEYS:
        raise SettingsError(f"{where}.category", entry.category, f"use one of {', '.join(CATEGORY_KEYS)}")
