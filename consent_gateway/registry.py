"""Name → category registries for cookies and events (exact names, then glob patterns)."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Sequence

from .bounded import BoundedLRU, RateLimitedWarner, truncate_key

logger = logging.getLogger("consent_gateway.registry")


class CategoryRegistry:
    """Maps cookie or event names to categories: exact names first, then glob patterns in order.

    A name the registry does not know counts as ``unknown_category``; a warning says so, so that
    the site's developers can register it. Names are looked up from their first ``MAX_NAME``
    characters (a cookie or event name is short), the lookup cache is bounded in entries and bytes,
    and warnings are rate-limited, not budget-exhausted: a flood of invented names cannot grow
    memory or silence the warning for good.
    """

    MAX_NAME = 256

    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        *,
        unknown_category: str,
        label: str = "cookie",
        section: str = "cookies",
        fixed: dict[str, str] | None = None,
        cache_size: int = 2048,
    ) -> None:
        self._label = label
        self._section = section
        self.unknown_category = unknown_category
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
        self._warner = RateLimitedWarner(logger)
        self._cache: BoundedLRU[str, str] = BoundedLRU(cache_size, cache_size * (self.MAX_NAME + 64))

    def category_of(self, name: str) -> str:
        """The category of ``name`` (``unknown_category`` for names the registry does not know)."""
        return self._cache.get_or_compute(truncate_key(name, self.MAX_NAME), self._lookup)

    def _lookup(self, name: str) -> str:
        found = self._exact.get(name)
        if found is not None:
            return found
        for regex, category in self._patterns:
            if regex.match(name):
                return category
        self._warner.warn(
            name,
            f"{self._label} %r is not in the registry; treating it as %r. Add it under [%s].",
            self.unknown_category,
            self._section,
        )
        return self.unknown_category

    def names_for(self, category: str) -> list[str]:
        """The registered names and patterns of one category (for the banner's cookie list)."""
        out = [n for n, c in self._exact.items() if c == category]
        out += [g for g, c in self._globs if c == category]
        return out
