"""가명처리: the transformations that make a record unlinkable without separately kept keys.

- visitor keys of consented rows: a keyed hash of the consent id under ``pseudonym_key``, which
  lives in the settings, never in ClickHouse, so erasure can still find a visitor's rows;
- visitor keys of pseudonymised rows: a keyed hash of site, full IP address and user agent under a
  random salt of the day; the address itself is never stored, and salts older than 48 hours are
  destroyed, so days cannot be linked (docs/privacy.md: why the full address, not the /24);
- IPs truncated to /24 (IPv4) or /48 (IPv6) and never stored raw;
- user agents reduced to browser family and major version, OS family, device class and bot flag;
- URLs without query strings except ``utm_*``; referrers reduced to their host; click ids
  removed; email- and phone-like path segments redacted, and so are secret-looking ones (UUIDs,
  long random tokens, long digit runs); emails and phone numbers redacted in every stored text;
- props of pseudonymised rows limited to the keys the site declares for each event.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from user_agents import parse as parse_user_agent

from .bounded import BoundedLRU, truncate_key

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CLICK_ID_KEYS = frozenset(
    {
        "gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "ttclid", "twclid",
        "li_fat_id", "yclid", "igshid", "mc_eid", "_kx", "epik", "scid", "irclickid",
    }
)
SALT_LIFETIME = dt.timedelta(hours=48)
_EMAIL = re.compile(r"[^/@\s]+@[^/@\s]+\.[A-Za-z]{2,}")
# Phone-like: 9-15 digits, optionally split by '-', '.', ' ', '(' or ')' and '+' prefixed: Korean
# mobiles (010-1234-5678, 01012345678), +82 10 1234 5678, E.164 (+14155552671). Any script's
# digits count (Korean IMEs can type full-width digits).
_PHONE = re.compile(r"\+?[\d(][\d\-. ()]{7,18}\d")
_PHONE_MIN_DIGITS = 9
# Secret-looking path segments: a UUID, a run of 16+ letters and digits mixing both (reset and
# invitation tokens, hashes; 20+ with mixed case for base64), or 10+ digits in a row (account,
# order or card numbers).
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_DIGIT_RUN = re.compile(r"[0-9]{10,}")
_HEADLESS = ("headless", "phantomjs", "puppeteer", "playwright", "selenium", "lighthouse")
REDACTED = "[redacted]"
MAX_PATH = 1024
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_ASCII_DIGIT = re.compile(r"[0-9]")
MAX_UTM = 200


def truncate_ip(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of ``ip`` in CIDR form; '' when it is no IP."""
    # Fast path for the common dotted quad, accepting exactly what ipaddress accepts (ASCII digits,
    # no leading zeros, 0-255); anything else takes the full parse. Nothing is cached: raw IPs
    # must not linger in memory.
    quad = _IPV4.fullmatch(ip.strip())
    if quad is not None:
        return f"{quad[1]}.{quad[2]}.{quad[3]}.0/24"
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class ReducedAgent:
    """What is kept of a user agent."""

    browser: str
    browser_version: str
    os: str
    device: str
    is_bot: bool


# A user agent is reduced from its first MAX_USER_AGENT characters (real ones are under 300): the
# parse cache is then bounded in bytes as well as entries, whatever size of header a server admits.
MAX_USER_AGENT = 512
_AGENTS: BoundedLRU[str, ReducedAgent] = BoundedLRU(4096, 4096 * (MAX_USER_AGENT + 128))


def reduce_user_agent(ua: str) -> ReducedAgent:
    """Parse once per distinct user agent (the parse is slow; agents repeat a lot).

    Only the first ``MAX_USER_AGENT`` characters count, so a huge header neither costs more to
    parse nor sits in the cache whole.
    """
    return _AGENTS.get_or_compute(truncate_key(ua, MAX_USER_AGENT), _reduce)


def user_agent_cache() -> BoundedLRU[str, ReducedAgent]:
    """The process's user-agent cache (for metrics and tests)."""
    return _AGENTS


def _reduce(ua: str) -> ReducedAgent:
    if not ua:
        return ReducedAgent("Unknown", "", "Unknown", "other", False)
    parsed = parse_user_agent(ua)
    lowered = ua.lower()
    is_bot = bool(parsed.is_bot) or any(marker in lowered for marker in _HEADLESS)
    if is_bot:
        device = "bot"
    elif parsed.is_tablet:
        device = "tablet"
    elif parsed.is_mobile:
        device = "mobile"
    elif parsed.is_pc:
        device = "desktop"
    else:
        device = "other"
    major = parsed.browser.version[0] if parsed.browser.version else ""
    return ReducedAgent(
        browser=parsed.browser.family[:40],
        browser_version=str(major)[:10],
        os=parsed.os.family[:40],
        device=device,
        is_bot=is_bot,
    )


def redact_path(path: str) -> str:
    """The path with email-, phone- and secret-looking segments replaced, cut to a sane length."""
    path = path[:MAX_PATH]
    # str.isdigit() on ASCII text is exactly [0-9]; only other text needs the per-character test.
    if "@" not in path and not (
        _ASCII_DIGIT.search(path) if path.isascii() else any(ch.isdigit() for ch in path)
    ):
        return path
    segments = path.split("/")
    for i, segment in enumerate(segments):
        decoded = unquote(segment)
        if _EMAIL.search(decoded) or _has_phone(decoded) or _looks_secret(decoded):
            segments[i] = REDACTED
    return "/".join(segments)


def _has_phone(text: str) -> bool:
    return any(sum(ch.isdigit() for ch in m.group()) >= _PHONE_MIN_DIGITS for m in _PHONE.finditer(text))


def _looks_secret(segment: str) -> bool:
    if _UUID.search(segment) or _DIGIT_RUN.search(segment):
        return True
    for run in _ALNUM_RUN.findall(segment):
        digits = sum(ch.isdigit() for ch in run)
        if digits >= 2 and len(run) - digits >= 2:
            return True
        # base64-like: long, mixed case and a digit (a slug or a word is neither)
        upper = sum(ch.isupper() for ch in run)
        if len(run) >= 20 and digits and upper >= 2 and len(run) - digits - upper >= 2:
            return True
    return False


def redact_text(value: str) -> str:
    """``value`` with email addresses and phone numbers replaced by ``[redacted]``.

    For every free text a row stores (UTM values, titles, string props): such text is written by
    people, and people paste their contact details into search boxes and forms.
    """
    if "@" in value:
        value = _EMAIL.sub(REDACTED, value)
    if _has_phone(value):
        value = _PHONE.sub(
            lambda m: REDACTED if sum(ch.isdigit() for ch in m.group()) >= _PHONE_MIN_DIGITS else m.group(),
            value,
        )
    return value


@dataclass(frozen=True, slots=True)
class FilteredProps:
    """Props cut to the declared keys, and how many keys were dropped."""

    props: dict[str, Any]
    dropped: int


def declared_props(
    props: Mapping[str, Any], event: str, declared: Mapping[str, frozenset[str]] | None
) -> FilteredProps:
    """The props of a pseudonymised row: only keys the site declares for ``event`` are kept.

    ``declared`` maps an event name to its allowed keys (``"*"`` for events not listed). With no
    declaration at all (``None``) nothing is filtered, as before; an event with no entry and no
    ``"*"`` keeps no props. Dropped keys are counted so the operator can see what was cut.
    """
    if declared is None:
        return FilteredProps(dict(props), 0)
    allowed = declared.get(event)
    if allowed is None:
        allowed = declared.get("*", frozenset())
    kept = {k: v for k, v in props.items() if k in allowed}
    return FilteredProps(kept, len(props) - len(kept))


@dataclass(frozen=True, slots=True)
class QueryParts:
    """What survives of a query string: utm values and (separately) the first click id."""

    utm: tuple[str, str, str, str, str]
    click_id: str


def split_query(query: str) -> QueryParts:
    utm = dict.fromkeys(UTM_KEYS, "")
    click = ""
    if query:
        for key, value in parse_qsl(query[:4096], keep_blank_values=False):
            key = key.lower()
            if key in utm and not utm[key]:
                utm[key] = _clean_text(value)[:MAX_UTM]
            elif key in CLICK_ID_KEYS and not click:
                click = f"{key}:{value[:200]}"
    return QueryParts(
        (utm["utm_source"], utm["utm_medium"], utm["utm_campaign"], utm["utm_term"], utm["utm_content"]),
        click,
    )


def _clean_text(value: str) -> str:
    if _EMAIL.search(value) or _has_phone(value):
        return REDACTED
    return value


def referrer_host(referrer: str, own_host: str = "") -> str:
    """The referrer's host name only; '' for none, for garbage and for the site's own host."""
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer[:2048]).hostname or ""
    except ValueError:
        return ""
    host = host.lower()[:253]
    if own_host and host == own_host.split(":", 1)[0].lower():
        return ""
    return host


def split_url(url: str) -> tuple[str, str]:
    """(path, query) of an absolute or relative URL; fragments are dropped."""
    try:
        parts = urlsplit(url[:4096])
    except ValueError:
        return "/", ""
    return (parts.path or "/"), parts.query


def _hash64(key: bytes, *parts: str) -> int:
    digest = hmac.new(key, "\x1f".join(parts).encode("utf-8", "surrogatepass"), hashlib.blake2b).digest()
    return int.from_bytes(digest[:8], "big")


def consented_visitor(pseudonym_key: bytes, consent_id: str) -> int:
    """Visitor key of a consented row: stable for one consent id, useless without the key."""
    return _hash64(pseudonym_key, "consent", consent_id)


def pseudonymous_visitor(salt: bytes, site: str, ip: str, user_agent: str) -> int:
    """Visitor key of a pseudonymised row: stable within one day's salt only.

    ``ip`` is the full client address (normalised by ``canonical_ip``), not its /24: people behind
    one office or carrier network with the same browser build stay different visitors. The address
    goes into the keyed hash only; without the day's salt, destroyed after 48 hours, the key cannot
    be tested against an address.
    """
    return _hash64(salt, site, canonical_ip(ip), user_agent)


def canonical_ip(ip: str) -> str:
    """One spelling per address (IPv4-mapped IPv6 as IPv4, IPv6 compressed); '' when it is no IP."""
    text = ip.strip()
    if _IPV4.fullmatch(text) is not None:
        return text
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


class SaltStore:
    """Random salts, one per UTC day, kept in a file apart from the data; destroyed after 48 h.

    The file is shared by the workers of one host through an exclusive lock, so that every worker
    derives the same visitor key for the same visitor on the same day.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "salts.json"
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"SaltStore({str(self.path)!r})"

    def salt_for(self, day: dt.date, now: dt.datetime | None = None) -> bytes:
        key = day.isoformat()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._lock:
            salts = self._update(now, want=key)
            self._cache = salts
            return salts[key]

    def destroy_expired(self, now: dt.datetime | None = None) -> list[str]:
        """Remove salts older than 48 hours; returns the days destroyed."""
        with self._lock:
            before = set(self._read_unlocked())
            self._cache = self._update(now, want=None)
            return sorted(before - set(self._cache))

    def days(self) -> list[str]:
        return sorted(self._read_unlocked())

    def _read_unlocked(self) -> dict[str, bytes]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return {k: bytes.fromhex(v) for k, v in raw.items() if isinstance(v, str)}

    def _update(self, now: dt.datetime | None, want: str | None) -> dict[str, bytes]:
        now = now or dt.datetime.now(dt.UTC)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            salts = self._read_unlocked()
            # A salt for day D stops being used at D+24h and is destroyed at D+48h.
            keep = {
                day: salt
                for day, salt in salts.items()
                if _day_start(day) + SALT_LIFETIME > now
            }
            changed = len(keep) != len(salts)
            if want is not None and want not in keep:
                keep[want] = secrets.token_bytes(32)
                changed = True
            if changed:
                tmp = self.path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump({k: v.hex() for k, v in keep.items()}, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            return keep


def _day_start(day: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
