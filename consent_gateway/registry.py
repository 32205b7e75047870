"""Name → category registries for cookies and events (exact names, then glob patterns)."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Sequence
from functools import lru_cache

logger = logging.getLogger("consent_gateway.registry")


class CategoryRegistry:
    """Maps cookie or event names to categories: exact names first, then glob patterns in order.

    A name the registry does not know counts as ``unknown_category``; the first time each unknown
    name is seen a warning says so, so that the site's developers can register it.
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
        self._warned: set[str] = set()
        self.category_of = lru_cache(maxsize=cache_size)(self._lookup)

    def _lookup(self, name: str) -> str:
        found = self._exact.get(name)
        if found is not None:
            return found
        for regex, category in self._patterns:
            if regex.match(name):
                return category
        if name not in self._warned and len(self._warned) < 10_000:
            self._warned.add(name)
            logger.warning(
                "%s %r is not in the registry; treating it as %r. Add it under [%s].",
                self._label,
                name[:64],
                self.unknown_category,
                self._section,
            )
        return self.unknown_category

    def names_for(self, category: str) -> list[str]:
        """The registered names and patterns of one category (for the banner's cookie list)."""
        out = [n for n, c in self._exact.items() if c == category]
        out += [g for g, c in self._globs if c == category]
        return out
