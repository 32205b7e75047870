"""Name → category registries for cookies and events.

A cookie's category is decided in this order:

1. the site's own registry (``[cookies]``): exact names, then glob patterns in the order written;
2. the well-known cookie catalogue shipped in the package (framework sessions and CSRF tokens,
   analytics and advertising cookies), when the gateway uses it;
3. otherwise ``unknown_category``, with a warning the first time each such name is seen.

Each answer says which of the three decided it (:class:`Source`), for inventories and for people.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from .bounded import BoundedLRU, RateLimitedWarner

logger = logging.getLogger("consent_gateway.registry")

# Names longer than this are classified every time and never remembered, so the lookup cache holds
# at most ``cache_size * CACHED_NAME_MAX`` characters of names. Real cookie names are far shorter.
CACHED_NAME_MAX = 128


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    currsize: int


class Source(StrEnum):
    """What decided a name's category."""

    REGISTRY = "registry"  # the site's own [cookies] / [events] table (or a name the gateway fixes)
    CATALOGUE = "catalogue"  # the well-known cookie catalogue
    UNCLASSIFIED = "unclassified"  # nobody knew it: the configured unknown category


class CatalogueHit(Protocol):
    """What the registry reads of a catalogue's answer (``catalogue.Entry`` is one)."""

    @property
    def category(self) -> str: ...
    @property
    def provider(self) -> str: ...


class CatalogueLookup(Protocol):
    """A catalogue of well-known names (``catalogue.Catalogue`` is one)."""

    def lookup(self, name: str, /) -> CatalogueHit | None: ...


@dataclass(frozen=True, slots=True)
class Classification:
    """A name's category and where it came from; ``provider`` is the catalogue's, when it decided."""

    category: str
    source: Source
    provider: str = ""


class CategoryRegistry:
    """Maps cookie or event names to categories: the site's registry, then the catalogue, then the default.

    ``category_of(name)`` answers with the category only; ``classify(name)`` also says which source
    decided. Both are remembered for up to ``cache_size`` names of at most CACHED_NAME_MAX characters.

    A catalogue entry counts only when its category is one of ``categories`` (the site's own): a site
    that dropped, say, "marketing" gets its unknown category for such cookies rather than a category
    no visitor can grant. With ``warn_unknown`` (the default) a name nobody knows is logged, a few a
    minute; the cookie inventory, which counts such names instead, turns that off.
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        *,
        unknown_category: str,
        label: str = "cookie",
        section: str = "cookies",
        fixed: dict[str, str] | None = None,
        cache_size: int = 2048,
        catalogue: CatalogueLookup | None = None,
        categories: Collection[str] | None = None,
        warn_unknown: bool = True,
    ) -> None:
        self._label = label
        self._section = section
        self.unknown_category = unknown_category
        self.catalogue = catalogue
        self._categories = None if categories is None else frozenset(categories)
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        # The globs as written, for people (banner, /state); the compiled regexes are for matching.
        self._globs: list[tuple[str, str]] = []
        for pattern, category in entries:
            if any(ch in pattern for ch in "*?["):
                self._patterns.append((re.compile(fnmatch.translate(pattern)), category))
                self._globs.append((pattern, category))
            else:
                self._exact[pattern] = category
        self._exact.update(fixed or {})
        # Unknown names are warned about a few a minute, never from a budget a flood could spend.
        self._warner = RateLimitedWarner(logger) if warn_unknown else None
        self._cache: BoundedLRU[str, Classification] = BoundedLRU(cache_size, cache_size * CACHED_NAME_MAX * 4)

    def __repr__(self) -> str:
        catalogue = "with catalogue" if self.catalogue is not None else "no catalogue"
        return (
            f"CategoryRegistry({self._label}s: {len(self._exact)} names, {len(self._globs)} patterns,"
            f" {catalogue}, unknown={self.unknown_category!r})"
        )

    def classify(self, name: str) -> Classification:
        """The category of ``name`` and the source that decided it (see the module's docstring)."""
        if len(name) > CACHED_NAME_MAX:
            return self._classify(name)
        return self._cache.get_or_compute(name, self._classify)

    def category_of(self, name: str) -> str:
        """The category of ``name`` (``classify(name).category``)."""
        return self.classify(name).category

    def cache_info(self) -> CacheInfo:
        """Hits, misses and size of the remembered lookups."""
        return CacheInfo(self._cache.hits, self._cache.misses, len(self._cache))

    def _classify(self, name: str) -> Classification:
        found = self._exact.get(name)
        if found is not None:
            return Classification(found, Source.REGISTRY)
        for regex, category in self._patterns:
            if regex.match(name):
                return Classification(category, Source.REGISTRY)
        if self.catalogue is not None:
            entry = self.catalogue.lookup(name)
            if entry is not None and (self._categories is None or entry.category in self._categories):
                return Classification(entry.category, Source.CATALOGUE, entry.provider)
        self._warn_unknown(name)
        return Classification(self.unknown_category, Source.UNCLASSIFIED)

    def _warn_unknown(self, name: str) -> None:
        if self._warner is None:
            return
        where = "in the registry or the cookie catalogue" if self.catalogue is not None else "in the registry"
        self._warner.warn(
            name,
            f"{self._label} %r is not {where}; treating it as %r. Add it under [%s].",
            self.unknown_category,
            self._section,
        )

    def names_for(self, category: str) -> list[str]:
        """The registered names and patterns of one category (for the banner's cookie list)."""
        out = [n for n, c in self._exact.items() if c == category]
        out += [g for g, c in self._globs if c == category]
        return out
