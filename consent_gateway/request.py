"""RequestFacts: the request headers the gateway reads, and the consent cookie's values among them."""

from __future__ import annotations

import re
from functools import lru_cache


class RequestFacts:
    """The request headers the gateway reads, gathered in one pass over ``scope["headers"]``.

    Values stay bytes until they are read: a page reads the consent cookie on every request, the
    others only when a visit is logged or a banner has to pick a language.
    """

    __slots__ = (
        "_accept_language",
        "_cookies",
        "_forwarded_for",
        "_found",
        "_headers",
        "_host",
        "_referer",
        "_user_agent",
        "consent_alternatives",
        "consent_cookie",
        "gpc",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]], cookie_name: bytes) -> None:
        if type(headers) is not list:
            headers = list(headers)
        # dict() reads the pairs in C; a name sent twice keeps its last value, as a loop would.
        found = dict(headers)
        self._found = found
        self._headers = headers
        cookie = found.get(b"cookie")
        if len(found) == len(headers):
            cookies = None if cookie is None else [cookie]
        else:  # a repeated header: every Cookie header counts, in order
            cookies = [value for key, value in headers if key == b"cookie"] or None
        consent_cookie: str | None = None
        alternatives: tuple[str, ...] = ()
        if cookies is not None:
            for value in cookies:
                if cookie_name in value:
                    for text in consent_values(value, cookie_name):
                        if consent_cookie is None:
                            consent_cookie = text
                        else:
                            # Further cg_consent values (a browser keeps one per domain/path after a
                            # cookie_domain change).
                            alternatives += (text,)
        self.consent_cookie = consent_cookie
        self.consent_alternatives = alternatives
        gpc = found.get(b"sec-gpc")
        self.gpc = gpc is not None and gpc.strip() == b"1"
        self._cookies = cookies
        self._user_agent = found.get(b"user-agent", b"")
        self._referer = found.get(b"referer", b"")
        self._host = found.get(b"host", b"")
        self._forwarded_for = found.get(b"x-forwarded-for", b"")
        self._accept_language = found.get(b"accept-language", b"")

    def first_values(self, names: frozenset[bytes]) -> dict[bytes, bytes]:
        """The first value of each header in ``names`` the request has (as ``Request.headers.get``);
        the mapping may hold other headers too, and is not to be changed."""
        headers = self._headers
        if len(self._found) == len(headers):  # no header sent twice: the one value is the first
            return self._found
        first: dict[bytes, bytes] = {}
        for key, value in headers:
            if key in names and key not in first:
                first[key] = value
        return first

    @property
    def cookie_headers(self) -> list[bytes] | None:
        """The request's Cookie header values as sent, in order (None without one)."""
        return self._cookies

    @property
    def cookie(self) -> str:
        """Every Cookie header of the request, joined with "; "."""
        joined = ""
        for value in self._cookies or ():
            text = value.decode("latin-1")
            joined = f"{joined}; {text}" if joined else text
        return joined

    @property
    def user_agent(self) -> str:
        return self._user_agent.decode("latin-1")

    @property
    def referer(self) -> str:
        return self._referer.decode("latin-1")

    @property
    def host(self) -> str:
        return self._host.decode("latin-1")

    @property
    def forwarded_for(self) -> str:
        return self._forwarded_for.decode("latin-1")

    @property
    def accept_language(self) -> str:
        return self._accept_language.decode("latin-1")


_COOKIE_PATTERNS: dict[bytes, re.Pattern[bytes]] = {}
# A returning visitor sends the same Cookie header on every page: its consent values are read once.
# At most COOKIE_CACHE_SIZE headers of at most COOKIE_CACHE_BYTES each are kept (1 MiB in all).
COOKIE_CACHE_SIZE = 256
COOKIE_CACHE_BYTES = 4096


def consent_values(header: bytes, name: bytes) -> tuple[str, ...] | list[str]:
    """Values of every ``name`` pair in one Cookie header, in order (see ``_cookie_values``)."""
    if len(header) <= COOKIE_CACHE_BYTES:
        return _cached_cookie_values(header, name)
    return _cookie_values(header, name)


_WHITESPACE = b" \t\n\r\x0b\x0c"


def _cookie_pattern(name: bytes) -> re.Pattern[bytes]:
    pattern = _COOKIE_PATTERNS.get(name)
    if pattern is None:
        # Starting with the name itself lets the engine jump from one occurrence to the next.
        pattern = _COOKIE_PATTERNS[name] = re.compile(re.escape(name) + b"[" + re.escape(_WHITESPACE) + b"]*=([^;]*)")
    return pattern


def _cookie_values(header: bytes, name: bytes) -> list[str]:
    """Values of every ``name`` pair in one Cookie header, whitespace and quotes stripped.

    The header reads as pairs split on ";" and then on the first "="; a pair is ``name``'s when
    its name, whitespace stripped, is exactly ``name``.
    """
    values = []
    for match in _cookie_pattern(name).finditer(header):
        at = match.start()
        # Only whitespace may stand between the pair's start (a ";" or the header's) and the name.
        if at and header[header.rfind(b";", 0, at) + 1 : at].strip(_WHITESPACE):
            continue
        values.append(match.group(1).strip().strip(b'"').decode("latin-1"))
    return values


@lru_cache(maxsize=COOKIE_CACHE_SIZE)
def _cached_cookie_values(header: bytes, name: bytes) -> tuple[str, ...]:
    return tuple(_cookie_values(header, name))
