"""Settings: one immutable object built from a TOML file and ``CONSENT_GATEWAY_*`` variables.

``Settings`` holds small frozen groups that mirror the TOML tables (``settings.cookie.name``,
``settings.pipeline.queue_max``); each group checks its own values.

Every value is checked when the object is built, so a bad configuration stops the process at
start with a message that names the key, the value and the fix, never later on a request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import ipaddress
import json
import operator
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .errors import SettingsError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "CONSENT_GATEWAY_"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CATEGORY_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_VERSION = re.compile(r"^(\d{1,4})\.(\d{1,4})$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
MIN_SECRET_LENGTH = 32
# Without a config file there is no stable name to derive; host names change with every container.
DEFAULT_SITE_ID = "default"
ACTIONS = ("keep", "pseudonymise", "drop")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, kw_only=True, slots=True)
class Category:
    """A consent category with its Korean and English texts."""

    key: str
    name_ko: str
    name_en: str
    description_ko: str = ""
    description_en: str = ""
    required: bool = False

    def name(self, locale: str) -> str:
        return self.name_ko if locale == "ko" else self.name_en

    def description(self, locale: str) -> str:
        return self.description_ko if locale == "ko" else self.description_en


DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category(
        key="necessary",
        name_ko="필수",
        name_en="Strictly necessary",
        description_ko="로그인, 보안, 동의 기록처럼 서비스 제공에 꼭 필요한 쿠키입니다. 끌 수 없습니다.",
        description_en="Login, security and remembering this choice. Always on.",
        required=True,
    ),
    Category(
        key="preferences",
        name_ko="환경설정·맞춤 서비스",
        name_en="Preferences",
        description_ko="언어 같은 환경설정을 기억하고 맞춤 서비스를 제공합니다.",
        description_en="Remember settings such as your language and tailor the service.",
    ),
    Category(
        key="analytics",
        name_ko="통계",
        name_en="Analytics",
        description_ko="방문 통계를 작성합니다. 동의하지 않으면 가명정보로만 통계를 냅니다.",
        description_en="Visit statistics. Without consent, only pseudonymised statistics are kept.",
    ),
    Category(
        key="marketing",
        name_ko="마케팅 및 광고",
        name_en="Marketing and advertising",
        description_ko="맞춤형 광고와 캠페인 성과 측정에 사용합니다. 선택 사항입니다.",
        description_en="Personalised advertising and campaign measurement. Optional.",
    ),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class CookieDescription:
    """What the site says of one of its cookies for the public declaration; empty fields fall back
    to the well-known-cookie catalogue and the inventory."""

    provider: str = ""
    purpose_ko: str = ""
    purpose_en: str = ""
    lifetime_ko: str = ""
    lifetime_en: str = ""
    party: str = ""  # "first", "third" or "" (worked out)

    @classmethod
    def from_mapping(cls, name: str, value: Any) -> CookieDescription:
        """One ``[cookie_descriptions."name"]`` table."""
        key = f"cookie_descriptions.{name}"
        if not isinstance(value, Mapping):
            raise SettingsError(key, value, 'write a table, e.g. provider = "Us", purpose_en = "Keeps you signed in"')
        allowed = [f.name for f in dataclasses.fields(cls)]
        for sub, text in value.items():
            if sub not in allowed:
                raise SettingsError(f"{key}.{sub}", text, _unknown(sub, allowed, "description key"))
            if not isinstance(text, str) or len(text) > 500:
                raise SettingsError(f"{key}.{sub}", text, "use a string of at most 500 characters")
        if value.get("party", "") not in ("", "first", "third"):
            raise SettingsError(f"{key}.party", value["party"], 'use "first" or "third"')
        return cls(**dict(value))


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A privacy-policy version ``MAJOR.MINOR`` with the date it takes effect."""

    major: int
    minor: int
    effective: dt.date
    announced: dt.date | None = None

    @classmethod
    def from_values(cls, key: str, version: object, effective: object, announced: object = None) -> PolicyVersion:
        match = _VERSION.match(str(version)) if isinstance(version, str | int | float) else None
        if match is None:
            raise SettingsError(key, version, 'write the version as "MAJOR.MINOR", e.g. "1.0"')
        eff = _to_date(f"{key}.effective", effective)
        ann = None if announced is None else _to_date(f"{key}.announced", announced)
        return cls(int(match.group(1)), int(match.group(2)), eff, ann)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


SETTINGS_BUTTON_PLACES = ("bottom-left", "bottom-right", "none")


@dataclass(frozen=True, kw_only=True, slots=True)
class BannerTexts:
    """The banner's words in Korean and English; their hash goes into each consent receipt."""

    title_ko: str = "쿠키 및 추적 동의"
    title_en: str = "Cookies and tracking"
    text_ko: str = (
        "서비스 제공에 필요한 쿠키 외에, 환경설정·통계·마케팅 쿠키는 동의하신 경우에만 사용합니다. "
        "언제든지 '쿠키 설정'에서 바꾸거나 철회할 수 있습니다."
    )
    text_en: str = (
        "Besides the cookies the service needs, we use preference, analytics and marketing "
        "cookies only with your consent. You can change or withdraw it any time in "
        "'Cookie settings'."
    )

    accept_ko: str = "모두 허용"
    accept_en: str = "Accept all"
    reject_ko: str = "모두 거부"
    reject_en: str = "Reject all"
    settings_ko: str = "설정"
    settings_en: str = "Settings"
    save_ko: str = "선택 저장"
    save_en: str = "Save choices"
    settings_link_ko: str = "쿠키 설정"
    settings_link_en: str = "Cookie settings"
    policy_link_ko: str = "개인정보처리방침"
    policy_link_en: str = "Privacy policy"
    withdraw_ko: str = "동의 철회 및 기록 삭제"
    withdraw_en: str = "Withdraw consent and erase my data"
    receipts_ko: str = "내 동의 기록"
    receipts_en: str = "My consent receipts"
    gpc_notice_ko: str = "브라우저의 GPC(Global Privacy Control) 신호에 따라 마케팅은 거부되었습니다."
    gpc_notice_en: str = "Your browser's Global Privacy Control signal refuses marketing."
    upcoming_notice_ko: str = "개인정보처리방침이 {date}에 버전 {version}(으)로 변경됩니다."
    upcoming_notice_en: str = "The privacy policy changes to version {version} on {date}."
    always_on_ko: str = "항상 사용"
    always_on_en: str = "Always on"
    cookies_ko: str = "쿠키"
    cookies_en: str = "Cookies"
    other_language_ko: str = "English"
    other_language_en: str = "한국어"
    close_ko: str = "닫기"
    close_en: str = "Close"
    saved_ko: str = "선택이 저장되었습니다."
    saved_en: str = "Your choice has been saved."

    def get(self, key: str, locale: str) -> str:
        """The text ``key`` in ``locale`` ("ko" or "en")."""
        return str(getattr(self, f"{key}_{'ko' if locale == 'ko' else 'en'}"))

    def title(self, locale: str) -> str:
        return self.get("title", locale)

    def text(self, locale: str) -> str:
        return self.get("text", locale)


# -- setting groups ------------------------------------------------------------------------------
#
# Each group mirrors a TOML table (or a family of top-level keys) and checks its own values. A field's
# metadata names its flat setting: the TOML key and the CONSENT_GATEWAY_<NAME> variable, which never
# change. Fields with a ``mask`` (keys, the ClickHouse URL's password) are masked in every repr and summary.


def _flat(name: str, *, mask: str = "") -> dict[str, str]:
    """Field metadata: the flat setting ``name`` (TOML key, environment name); ``mask``: "key" or "url"."""
    return {"flat": name, "mask": mask}


def _masked(value: Any, mask: str) -> str:
    """A secret as a repr or summary may show it: a URL without its password, a key only as set or not."""
    if mask == "url":
        return _url_without_password(str(value))
    if isinstance(value, tuple):
        return f"<{len(value)} hidden>" if value else "<missing>"
    return "<hidden>" if value else "<missing>"


def _url_without_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (all of it hidden when it cannot be parsed)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<hidden>"
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Group:
    """Shared behaviour of the setting groups: self-check on creation, masked repr, one-line summary."""

    if TYPE_CHECKING:
        # Every group is a dataclass: what ``dataclasses.fields`` reads.
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        """Raise SettingsError for the first invalid value; groups without rules accept anything."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={_shown_repr(self, f)}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({shown})"

    def summary(self) -> str:
        """``name=value`` for every field on one line, secrets masked."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            mask = f.metadata.get("mask", "")
            shown = _masked(value, mask) if mask else value
            parts.append(f"{f.name}={shown if mask == 'key' else _brief(shown)}")
        return " ".join(parts)


def _shown_repr(group: object, f: dataclasses.Field[Any]) -> str:
    """A field's repr; secrets masked, and the long texts (categories, banner) in brief."""
    value = getattr(group, f.name)
    mask = f.metadata.get("mask", "")
    if mask == "url":
        return repr(_masked(value, mask))
    if mask:
        return _masked(value, mask)
    if isinstance(value, BannerTexts) or (isinstance(value, tuple) and value and isinstance(value[0], Category)):
        return _brief(value)
    return repr(value)


def _brief(value: Any) -> str:
    """A value as a person reads it in a summary line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value, ensure_ascii=False)
    if isinstance(value, PolicyVersion):
        return f"{value}@{value.effective.isoformat()}"
    if isinstance(value, BannerTexts):
        changed = [f.name for f in dataclasses.fields(value) if getattr(value, f.name) != f.default]
        return f"{len(changed)}-texts-changed" if changed else "default-texts"
    if isinstance(value, tuple):
        items = [_brief_item(v) for v in value]
        more = f",+{len(items) - 8}" if len(items) > 8 else ""
        return "[" + ",".join(items[:8]) + more + "]"
    return str(value)


def _brief_item(item: Any) -> str:
    if isinstance(item, Category):
        return item.key + ("*" if item.required else "")
    if isinstance(item, tuple):
        return ":".join(str(part) for part in item)
    return str(item)


@dataclass(frozen=True, kw_only=True, repr=False)
class KeySettings(_Group):
    """Cookie-signing keys (newest last) and the key of the consent-id pseudonyms."""

    secret_keys: tuple[str, ...] = field(default=(), metadata=_flat("secret_keys", mask="key"))
    pseudonym_key: str = field(default="", metadata=_flat("pseudonym_key", mask="key"))

    def _check(self) -> None:
        make = f"use at least {MIN_SECRET_LENGTH} characters; `consent-gateway keys secret` makes one"
        for i, key in enumerate(self.secret_keys):
            if len(key) < MIN_SECRET_LENGTH:
                raise SettingsError(f"secret_keys[{i}]", "<hidden>", make)
        if self.pseudonym_key and len(self.pseudonym_key) < MIN_SECRET_LENGTH:
            raise SettingsError("pseudonym_key", "<hidden>", make)
        if self.pseudonym_key and self.pseudonym_key in self.secret_keys:
            raise SettingsError("pseudonym_key", "<hidden>", "use a key of its own, not one of secret_keys")

    def missing(self) -> tuple[str, ...]:
        """The names of the required keys that are not set, in the order they are documented."""
        return tuple(name for name in ("secret_keys", "pseudonym_key") if not getattr(self, name))


@dataclass(frozen=True, kw_only=True, repr=False)
class ClickHouseSettings(_Group):
    """Where the rows go: the embedded engine or a server / cluster, and how migrations run."""

    url: str = field(default="", metadata=_flat("clickhouse_url", mask="url"))
    database: str = field(default="consent_gateway", metadata=_flat("database"))
    cluster: str = field(default="", metadata=_flat("cluster"))
    auto_migrate: bool | None = field(default=None, metadata=_flat("auto_migrate"))
    async_insert: bool = field(default=False, metadata=_flat("clickhouse_async_insert"))

    def _check(self) -> None:
        if self.url and not self.url.startswith(("chdb://", "http://", "https://")):
            shown = _url_without_password(self.url)
            raise SettingsError(
                "clickhouse_url", shown, "use chdb:///path for the embedded engine or http(s)://host:port"
            )
        if not _IDENT.match(self.database):
            raise SettingsError("database", self.database, "use letters, digits and '_' (a ClickHouse identifier)")
        if self.cluster and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.cluster):
            raise SettingsError(
                "cluster", self.cluster, "use the cluster name from the ClickHouse remote_servers config"
            )
        if self.cluster and not self.url.startswith(("http://", "https://")):
            raise SettingsError(
                "cluster", self.cluster, "a cluster needs an http(s):// clickhouse_url; leave it empty for chdb"
            )


@dataclass(frozen=True, kw_only=True, repr=False)
class CookieSettings(_Group):
    """The signed consent cookie and the registry that sorts the site's own cookies into categories."""

    name: str = field(default="cg_consent", metadata=_flat("cookie_name"))
    max_age_days: int = field(default=365, metadata=_flat("cookie_max_age_days"))
    secure: bool = field(default=True, metadata=_flat("cookie_secure"))
    domain: str = field(default="", metadata=_flat("cookie_domain"))
    registry: tuple[tuple[str, str], ...] = field(default=(), metadata=_flat("cookie_registry"))
    descriptions: tuple[tuple[str, CookieDescription], ...] = field(default=(), metadata=_flat("cookie_descriptions"))
    unknown_category: str = field(default="preferences", metadata=_flat("unknown_cookie_category"))
    # Cookies not in the registry are looked up in the well-known cookie catalogue (catalogue.py).
    catalogue: bool = field(default=True, metadata=_flat("cookie_catalogue"))
    verify_cache_size: int = field(default=4096, metadata=_flat("verify_cache_size"))
    # "__Host-" + name: the browser then refuses the cookie from a sibling subdomain (needs Secure, no Domain).
    host_prefix: bool = field(default=False, metadata=_flat("cookie_host_prefix"))
    # Cookies signed before they carried the site id are honoured as this site's while this is on.
    accept_unbound: bool = field(default=True, metadata=_flat("cookie_accept_unbound"))

    def _check(self) -> None:
        if self.host_prefix and (self.domain or not self.secure):
            raise SettingsError(
                "cookie_host_prefix",
                self.host_prefix,
                "a __Host- cookie must be Secure and have no Domain: set cookie_secure = true and leave "
                f"cookie_domain empty (it is {self.domain!r}), or turn cookie_host_prefix off",
            )
        if not _COOKIE_NAME.match(self.name):
            raise SettingsError("cookie_name", self.name, "use a valid cookie name (letters, digits, _ - .)")
        if not 1 <= self.max_age_days <= 400:
            raise SettingsError(
                "cookie_max_age_days", self.max_age_days, "use 1 to 400 days (browsers cap cookies at 400)"
            )
        _check_patterns("cookies", self.registry)
        _check_patterns("cookie_descriptions", tuple((name, "") for name, _ in self.descriptions))
        _check_positive(self, verify_cache_size="verify_cache_size")


@dataclass(frozen=True, kw_only=True, repr=False)
class ConsentSettings(_Group):
    """The categories offered, the privacy-policy versions and the keep / pseudonymise / drop matrix."""

    categories: tuple[Category, ...] = field(default=DEFAULT_CATEGORIES, metadata=_flat("categories"))
    # The category visits are governed by, and the one whose grant lets click ids be stored.
    visit_category: str = field(default="analytics", metadata=_flat("visit_category"))
    marketing_category: str = field(default="marketing", metadata=_flat("marketing_category"))
    gpc_refuses: tuple[str, ...] = field(default=("marketing",), metadata=_flat("gpc_refuses"))
    # Refused for a visitor the app marks as under 14 unless a legal representative consented (children.py).
    behavioural: tuple[str, ...] = field(default=("marketing",), metadata=_flat("behavioural_categories"))
    policy: PolicyVersion = field(default=PolicyVersion(1, 0, dt.date(2026, 1, 1)), metadata=_flat("policy"))
    upcoming_policy: PolicyVersion | None = field(default=None, metadata=_flat("upcoming_policy"))
    # Empty: the banner has no policy link (a site without such a page would get a broken link).
    policy_url: str = field(default="", metadata=_flat("policy_url"))
    matrix: tuple[tuple[str, str, str], ...] = field(
        default=(
            ("visit", "keep", "pseudonymise"),
            ("analytics", "keep", "pseudonymise"),
            ("marketing", "keep", "drop"),
        ),
        metadata=_flat("policy_matrix"),
    )
    # Bots are stored with is_bot = 1 and left out of every analytics query and rollup; true drops them.
    drop_bots: bool = field(default=False, metadata=_flat("drop_bots"))

    @property
    def category_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.categories)

    def _check(self) -> None:
        self._check_categories()
        keys = self.category_keys
        for name, value in (("visit_category", self.visit_category), ("marketing_category", self.marketing_category)):
            if value not in keys:
                raise SettingsError(name, value, f"use one of the categories: {', '.join(keys)}")
        for kind, granted, refused in self.matrix:
            for action in (granted, refused):
                if action not in ACTIONS:
                    raise SettingsError(f"policy.matrix.{kind}", action, f"use one of {list(ACTIONS)}")
        self._check_upcoming()

    def _check_categories(self) -> None:
        keys = list(self.category_keys)
        for cat in self.categories:
            if not _CATEGORY_KEY.match(cat.key):
                raise SettingsError("categories.key", cat.key, "use lower-case letters, digits and '_'")
        if len(set(keys)) != len(keys):
            raise SettingsError("categories", keys, "each category key must appear once")
        required = {c.key for c in self.categories if c.required}
        if not required:
            raise SettingsError("categories", keys, "mark one category required = true (strictly necessary cookies)")
        for refused in self.gpc_refuses:
            if refused not in keys:
                raise SettingsError("gpc_refuses", refused, f"use categories from {keys}")
            if refused in required:
                raise SettingsError("gpc_refuses", refused, "a required category cannot be refused; remove it")
        for behavioural in self.behavioural:
            if behavioural not in keys:
                raise SettingsError("behavioural_categories", behavioural, f"use categories from {keys}")
            if behavioural in required:
                raise SettingsError(
                    "behavioural_categories", behavioural, "a required category cannot be refused; remove it"
                )

    def _check_upcoming(self) -> None:
        up, cur = self.upcoming_policy, self.policy
        if up is None:
            return
        if (up.major, up.minor) <= (cur.major, cur.minor):
            raise SettingsError("policy.upcoming.version", str(up), f"use a version newer than {cur}")
        if up.announced is None:
            raise SettingsError("policy.upcoming.announced", None, "give the date the change was announced")
        needed = 30 if up.major > cur.major else 7
        if (up.effective - up.announced).days < needed:
            raise SettingsError(
                "policy.upcoming.effective",
                up.effective.isoformat(),
                f"a {'MAJOR' if needed == 30 else 'MINOR'} change needs {needed} days of notice; "
                f"set it on or after {(up.announced + dt.timedelta(days=needed)).isoformat()}",
            )


@dataclass(frozen=True, kw_only=True, repr=False)
class EventSettings(_Group):
    """``/collect`` event names and their categories."""

    registry: tuple[tuple[str, str], ...] = field(
        default=(("pageview", "analytics"),), metadata=_flat("event_registry")
    )
    unknown_category: str = field(default="analytics", metadata=_flat("unknown_event_category"))
    max_names: int = field(default=500, metadata=_flat("max_event_names"))
    # [event_props]: event name -> the prop keys pseudonymised rows keep ("*": events not listed).
    props: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), metadata=_flat("event_props"))

    def _check(self) -> None:
        _check_patterns("events", self.registry)
        _check_positive(self, max_names="max_event_names")
        for event, keys in self.props:
            if not event or len(event) > 128:
                raise SettingsError("event_props", event, 'use an event name of 1-128 characters, or "*"')
            for key in keys:
                if not isinstance(key, str) or not key or len(key) > 128:
                    raise SettingsError(f"event_props.{event}", key, "list prop keys of 1-128 characters")


@dataclass(frozen=True, kw_only=True, repr=False)
class PageSettings(_Group):
    """What the gateway adds to the wrapped site's pages: the banner and the visit records."""

    banner: BannerTexts = field(default=BannerTexts(), metadata=_flat("banner"))
    inject_banner: bool = field(default=True, metadata=_flat("inject_banner"))
    # Where the floating "cookie settings" button sits; "none" when the site shows its own link.
    settings_button: str = field(default="bottom-left", metadata=_flat("settings_button"))
    google_consent_mode: bool = field(default=False, metadata=_flat("google_consent_mode"))
    default_locale: str = field(default="ko", metadata=_flat("default_locale"))
    log_visit_assets: bool = field(default=False, metadata=_flat("log_visit_assets"))

    def _check(self) -> None:
        if self.default_locale not in ("ko", "en"):
            raise SettingsError("default_locale", self.default_locale, 'use "ko" or "en"')
        if self.settings_button not in SETTINGS_BUTTON_PLACES:
            raise SettingsError(
                "settings_button", self.settings_button, f"use one of {', '.join(SETTINGS_BUTTON_PLACES)}"
            )


@dataclass(frozen=True, kw_only=True, repr=False)
class RetentionSettings(_Group):
    """How long rows and daily salts are kept (``[retention]``)."""

    events_months: int = field(default=3, metadata=_flat("events_retention_months"))
    receipts_years: int = field(default=5, metadata=_flat("receipts_retention_years"))
    salt_check_interval: float = field(default=3600.0, metadata=_flat("salt_check_interval"))

    def _check(self) -> None:
        if not 1 <= self.events_months <= 120:
            raise SettingsError("events_retention_months", self.events_months, "use 1 to 120 months")
        if not 1 <= self.receipts_years <= 20:
            raise SettingsError("receipts_retention_years", self.receipts_years, "use 1 to 20 years")
        if self.salt_check_interval <= 0:
            raise SettingsError("salt_check_interval", self.salt_check_interval, "use a number of seconds above zero")


@dataclass(frozen=True, kw_only=True, repr=False)
class HttpSettings(_Group):
    """Which proxies are believed about the client address, and which other origins may POST."""

    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_flat("trusted_proxies"))
    allowed_origins: tuple[str, ...] = field(default=(), metadata=_flat("allowed_origins"))
    # Requests whose header block (names and values) is larger are answered 431.
    max_header_bytes: int = field(default=65_536, metadata=_flat("max_header_bytes"))

    def _check(self) -> None:
        if not 1024 <= self.max_header_bytes <= 16 * 1024 * 1024:
            raise SettingsError(
                "max_header_bytes", self.max_header_bytes, "use 1024 to 16777216 bytes (default 65536, 64 KiB)"
            )
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError("trusted_proxies", cidr, "use IP networks like 10.0.0.0/8 or 127.0.0.1") from None
        for origin in self.allowed_origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise SettingsError("allowed_origins", origin, "use scheme://host[:port] with no path")


@dataclass(frozen=True, kw_only=True, repr=False)
class CollectSettings(_Group):
    """Limits of one ``/collect`` request (``[collect]``)."""

    max_body: int = field(default=32_768, metadata=_flat("collect_max_body"))
    max_events: int = field(default=50, metadata=_flat("collect_max_events"))
    ack_timeout: float = field(default=10.0, metadata=_flat("collect_ack_timeout"))
    # How long a /collect or consent body may take to arrive in full before the request gets 408.
    body_timeout: float = field(default=10.0, metadata=_flat("collect_body_timeout"))

    def _check(self) -> None:
        _check_positive(self, max_body="collect_max_body", max_events="collect_max_events")
        if not 0 < self.body_timeout <= 600:
            raise SettingsError("collect_body_timeout", self.body_timeout, "use 0.1 to 600 seconds (default 10)")
        if self.ack_timeout <= 0:
            raise SettingsError("collect_ack_timeout", self.ack_timeout, "use a number of seconds above zero")


@dataclass(frozen=True, kw_only=True, repr=False)
class RateLimitSettings(_Group):
    """Per-client token buckets, per worker (``[rate_limit]``); 0 per minute turns one off."""

    collect_per_minute: float = field(default=600.0, metadata=_flat("rate_limit_collect_per_minute"))
    collect_burst: int = field(default=120, metadata=_flat("rate_limit_collect_burst"))
    consent_per_minute: float = field(default=30.0, metadata=_flat("rate_limit_consent_per_minute"))
    consent_burst: int = field(default=20, metadata=_flat("rate_limit_consent_burst"))
    # Requests passed to the wrapped app: generous (a page pulls assets, offices share one address).
    page_per_minute: float = field(default=1200.0, metadata=_flat("rate_limit_page_per_minute"))
    page_burst: int = field(default=600, metadata=_flat("rate_limit_page_burst"))

    def _check(self) -> None:
        for attr in ("collect_per_minute", "consent_per_minute", "page_per_minute"):
            if not 0 <= getattr(self, attr) <= 1_000_000:
                raise SettingsError(
                    f"rate_limit_{attr}", getattr(self, attr), "use 0 (no limit) up to 1000000 requests per minute"
                )
        _check_positive(
            self,
            collect_burst="rate_limit_collect_burst",
            consent_burst="rate_limit_consent_burst",
            page_burst="rate_limit_page_burst",
        )


@dataclass(frozen=True, kw_only=True, repr=False)
class PipelineSettings(_Group):
    """The in-memory queue, the group commit and the ClickHouse writer (``[pipeline]``)."""

    batch_size: int = field(default=50_000, metadata=_flat("batch_size"))
    flush_interval: float = field(default=1.0, metadata=_flat("flush_interval"))
    queue_max: int = field(default=100_000, metadata=_flat("queue_max"))
    shutdown_timeout: float = field(default=10.0, metadata=_flat("shutdown_timeout"))
    commit_window: float = field(default=0.0, metadata=_flat("commit_window"))
    visit_shed_fraction: float = field(default=0.9, metadata=_flat("visit_shed_fraction"))
    insert_retry_initial: float = field(default=0.25, metadata=_flat("insert_retry_initial"))
    insert_retry_max: float = field(default=30.0, metadata=_flat("insert_retry_max"))

    def _check(self) -> None:
        _check_positive(self, batch_size="batch_size", queue_max="queue_max")
        if not 0.01 <= self.flush_interval <= 60:
            raise SettingsError("flush_interval", self.flush_interval, "use 0.01 to 60 seconds")
        if self.shutdown_timeout <= 0:
            raise SettingsError("shutdown_timeout", self.shutdown_timeout, "use a number of seconds above zero")
        if not 0 <= self.commit_window <= 1:
            raise SettingsError("commit_window", self.commit_window, "use 0 to 1 seconds (0-5 ms is typical)")
        if not 0.1 <= self.visit_shed_fraction <= 1:
            raise SettingsError(
                "visit_shed_fraction", self.visit_shed_fraction, "use 0.1 to 1 (visits shed when this full)"
            )
        if not 0 < self.insert_retry_initial <= self.insert_retry_max:
            raise SettingsError(
                "insert_retry_initial",
                self.insert_retry_initial,
                f"use a number above zero, at most insert_retry_max ({self.insert_retry_max})",
            )


@dataclass(frozen=True, kw_only=True, repr=False)
class JournalSettings(_Group):
    """The local journal that makes accepted records durable before ClickHouse has them."""

    enabled: bool = field(default=True, metadata=_flat("journal_enabled"))
    dir: Path | None = field(default=None, metadata=_flat("journal_dir"))
    max_bytes: int = field(default=512 * 1024 * 1024, metadata=_flat("journal_max_bytes"))
    segment_bytes: int = field(default=16 * 1024 * 1024, metadata=_flat("journal_segment_bytes"))

    def _check(self) -> None:
        if self.segment_bytes < 4096:
            raise SettingsError("journal_segment_bytes", self.segment_bytes, "use at least 4096 bytes")
        if self.max_bytes < self.segment_bytes:
            raise SettingsError(
                "journal_max_bytes", self.max_bytes, f"use at least journal_segment_bytes ({self.segment_bytes})"
            )


@dataclass(frozen=True, kw_only=True, repr=False)
class LogSettings(_Group):
    """Log level and line format (``[log]``)."""

    level: str = field(default="info", metadata=_flat("log_level"))
    format: str = field(default="json", metadata=_flat("log_format"))

    def _check(self) -> None:
        if self.level not in LOG_LEVELS:
            raise SettingsError("log_level", self.level, f"use one of {list(LOG_LEVELS)}")
        if self.format not in ("json", "text"):
            raise SettingsError("log_format", self.format, 'use "json" (one JSON object a line) or "text"')


@dataclass(frozen=True, kw_only=True, repr=False)
class AnalyticsSettings(_Group):
    """The analytics API: k-anonymity threshold and where its token hashes live."""

    k_anonymity: int = field(default=5, metadata=_flat("k_anonymity"))
    tokens_file: Path | None = field(default=None, metadata=_flat("analytics_tokens_file"))

    def _check(self) -> None:
        if not 1 <= self.k_anonymity <= 1000:
            raise SettingsError("k_anonymity", self.k_anonymity, "use 1 to 1000 distinct visitors (default 5)")


def _check_positive(group: object, **flat_by_attr: str) -> None:
    for attr, flat in flat_by_attr.items():
        number = getattr(group, attr)
        if number < 1:
            raise SettingsError(flat, number, "use a number above zero")


def _check_patterns(table: str, registry: tuple[tuple[str, str], ...]) -> None:
    for pattern, _category in registry:
        if not pattern or len(pattern) > 128:
            raise SettingsError(table, pattern, "use a name or pattern of 1-128 characters")


_GROUPS: dict[str, type[DataclassInstance]] = {
    "keys": KeySettings,
    "clickhouse": ClickHouseSettings,
    "cookie": CookieSettings,
    "consent": ConsentSettings,
    "events": EventSettings,
    "page": PageSettings,
    "retention": RetentionSettings,
    "http": HttpSettings,
    "collect": CollectSettings,
    "rate_limit": RateLimitSettings,
    "pipeline": PipelineSettings,
    "journal": JournalSettings,
    "log": LogSettings,
    "analytics": AnalyticsSettings,
}


@dataclass(frozen=True, kw_only=True, init=False, repr=False)
class Settings:
    """Everything the gateway needs, in groups that mirror the TOML tables, validated once.

    ``Settings(...)`` and :meth:`replace` take the group objects or the flat setting names of
    docs/configuration.md (``Settings(queue_max=10)``); secrets never appear in the repr.
    """

    site_id: str = DEFAULT_SITE_ID
    data_dir: Path = Path("./data")
    prefix: str = "/_consent"
    keys: KeySettings = KeySettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    cookie: CookieSettings = CookieSettings()
    consent: ConsentSettings = ConsentSettings()
    events: EventSettings = EventSettings()
    page: PageSettings = PageSettings()
    retention: RetentionSettings = RetentionSettings()
    http: HttpSettings = HttpSettings()
    collect: CollectSettings = CollectSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    pipeline: PipelineSettings = PipelineSettings()
    journal: JournalSettings = JournalSettings()
    log: LogSettings = LogSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

    def __init__(self, **values: Any) -> None:
        for name, value in _assemble(values).items():
            object.__setattr__(self, name, value)
        self._check()
        # Compatibility layer (see the end of the class): the flat names as plain read-only attributes.
        for flat, read in _FLAT_READERS:
            object.__setattr__(self, flat, read(self))

    def _check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.site_id):
            raise SettingsError("site_id", self.site_id, "use 1-64 letters, digits, '.', '-' or '_'")
        if not re.fullmatch(r"/[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*", self.prefix):
            raise SettingsError("prefix", self.prefix, 'start with "/" and use no trailing slash, e.g. "/_consent"')
        keys = list(self.consent.category_keys)
        for table, registry in (("cookies", self.cookie.registry), ("events", self.events.registry)):
            for pattern, category in registry:
                if category not in keys:
                    raise SettingsError(f"{table}.{pattern}", category, f"use one of the categories {keys}")
        for flat, category in (
            ("unknown_cookie_category", self.cookie.unknown_category),
            ("unknown_event_category", self.events.unknown_category),
        ):
            if category not in keys:
                raise SettingsError(flat, category, f"use one of the categories {keys}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"Settings({shown})"

    # -- reading it ---------------------------------------------------------------------------

    def summary(self) -> list[str]:
        """One readable line a setting group (``group: name=value ...``), secrets masked."""
        lines = [f"site: site_id={self.site_id} data_dir={self.data_dir} prefix={self.prefix}"]
        lines += [f"{name}: {getattr(self, name).summary()}" for name in _GROUPS]
        return lines

    def missing_keys(self) -> tuple[str, ...]:
        """The required keys that are not set: ``secret_keys`` and / or ``pseudonym_key``."""
        return self.keys.missing()

    def require_keys(self) -> None:
        """Raise one SettingsError that names every missing required key, or return."""
        missing = self.missing_keys()
        if not missing:
            return
        variables = " and ".join(f"{ENV_PREFIX}{name.upper()}" for name in missing)
        raise SettingsError(
            ", ".join(missing),
            "<missing>",
            f"set {variables} (at least {MIN_SECRET_LENGTH} characters each; `consent-gateway keys secret` "
            "prints one), or run `consent-gateway init` to write them beside the config, "
            "or start with `--local-keys` for local development",
        )

    # -- derived values -------------------------------------------------------------------

    @property
    def clickhouse_dsn(self) -> str:
        """The ClickHouse URL in force: the setting, or the embedded engine under ``data_dir``."""
        if self.clickhouse.url:
            return self.clickhouse.url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def migrate_at_start(self) -> bool:
        auto = self.clickhouse.auto_migrate
        return self.embedded if auto is None else auto

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def journal_root(self) -> Path:
        """Where the pipeline's journal lives: ``journal_dir`` or ``data_dir/journal``."""
        return self.journal.dir or self.data_dir / "journal"

    @property
    def tokens_path(self) -> Path:
        """Where the analytics API's token hashes live (``analytics_tokens_file`` or under ``data_dir``)."""
        return self.analytics.tokens_file or self.keys_dir / "analytics_tokens.json"

    @property
    def category_keys(self) -> tuple[str, ...]:
        return self.consent.category_keys

    @property
    def consent_cookie_name(self) -> str:
        """The consent cookie's name as browsers send it back: ``cookie_name``, with ``__Host-``
        in front when ``cookie_host_prefix`` is on. Read, set and delete the cookie under this name."""
        name = self.cookie.name
        return f"__Host-{name}" if self.cookie.host_prefix and not name.startswith("__Host-") else name

    @property
    def declared_props(self) -> dict[str, frozenset[str]] | None:
        """``[event_props]`` as ``pseudonymize.declared_props`` reads it; None when the site declares none."""
        if not self.events.props:
            return None
        return {event: frozenset(keys) for event, keys in self.events.props}

    @property
    def required_categories(self) -> frozenset[str]:
        return frozenset(c.key for c in self.consent.categories if c.required)

    def category(self, key: str) -> Category:
        for cat in self.consent.categories:
            if cat.key == key:
                return cat
        raise KeyError(key)

    def policy_in_force(self, today: dt.date | None = None) -> PolicyVersion:
        """The version in force today: the upcoming one once its effective date has come."""
        today = today or dt.datetime.now(dt.UTC).date()
        up = self.consent.upcoming_policy
        if up is not None and up.effective <= today:
            return up
        return self.consent.policy

    def announced_policy(self, today: dt.date | None = None) -> PolicyVersion | None:
        """The upcoming version while it is announced but not yet in force."""
        today = today or dt.datetime.now(dt.UTC).date()
        up = self.consent.upcoming_policy
        if up is not None and up.effective > today:
            return up
        return None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (group objects or flat setting names) applied and checked."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(changes)
        return Settings(**values)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> Settings:
        """Read a TOML file; ``overrides`` win over the file.

        Without ``site_id`` in the file, the site is named after the file's folder.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError("config", str(path), "the file does not exist; check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError("config", str(path), f"it is not valid TOML ({exc})") from None
        values = _from_mapping(raw)
        if "data_dir" in values and not Path(values["data_dir"]).is_absolute():
            values["data_dir"] = (path.parent / values["data_dir"]).resolve()
        values.setdefault("site_id", site_id_for(path))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """TOML file (``path`` or ``CONSENT_GATEWAY_CONFIG``), then environment, then overrides."""
        environ = os.environ if environ is None else environ
        path = path or environ.get(ENV_PREFIX + "CONFIG") or None
        values: dict[str, Any] = {}
        if path:
            base = cls.from_toml(path)
            values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        values.update(_from_environ(environ))
        values.update(overrides)
        return cls(**values)

    # -- compatibility layer: DELETE once every module reads the groups --------------------------
    # The flat names of the ungrouped Settings stay readable (``settings.queue_max`` is
    # ``settings.pipeline.queue_max``): __init__ copies each group value to an instance attribute
    # named as before (frozen like the rest, and as fast to read as before). The annotations here
    # exist only for type checkers; a test keeps them equal to the groups' fields. To finish the
    # move: switch the readers to the group paths, then delete this block, _FLAT_READERS and the
    # loop at the end of __init__.
    if TYPE_CHECKING:
        secret_keys: tuple[str, ...]
        pseudonym_key: str
        clickhouse_url: str
        database: str
        cluster: str
        auto_migrate: bool | None
        clickhouse_async_insert: bool
        cookie_name: str
        cookie_max_age_days: int
        cookie_secure: bool
        cookie_domain: str
        cookie_registry: tuple[tuple[str, str], ...]
        cookie_descriptions: tuple[tuple[str, CookieDescription], ...]
        unknown_cookie_category: str
        cookie_catalogue: bool
        verify_cache_size: int
        cookie_host_prefix: bool
        cookie_accept_unbound: bool
        categories: tuple[Category, ...]
        visit_category: str
        marketing_category: str
        gpc_refuses: tuple[str, ...]
        behavioural_categories: tuple[str, ...]
        policy: PolicyVersion
        upcoming_policy: PolicyVersion | None
        policy_url: str
        policy_matrix: tuple[tuple[str, str, str], ...]
        drop_bots: bool
        event_registry: tuple[tuple[str, str], ...]
        unknown_event_category: str
        max_event_names: int
        event_props: tuple[tuple[str, tuple[str, ...]], ...]
        banner: BannerTexts
        inject_banner: bool
        settings_button: str
        google_consent_mode: bool
        default_locale: str
        log_visit_assets: bool
        events_retention_months: int
        receipts_retention_years: int
        salt_check_interval: float
        trusted_proxies: tuple[str, ...]
        allowed_origins: tuple[str, ...]
        max_header_bytes: int
        collect_max_body: int
        collect_max_events: int
        collect_ack_timeout: float
        collect_body_timeout: float
        rate_limit_collect_per_minute: float
        rate_limit_collect_burst: int
        rate_limit_consent_per_minute: float
        rate_limit_consent_burst: int
        rate_limit_page_per_minute: float
        rate_limit_page_burst: int
        batch_size: int
        flush_interval: float
        queue_max: int
        shutdown_timeout: float
        commit_window: float
        visit_shed_fraction: float
        insert_retry_initial: float
        insert_retry_max: float
        journal_enabled: bool
        journal_dir: Path | None
        journal_max_bytes: int
        journal_segment_bytes: int
        log_level: str
        log_format: str
        k_anonymity: int
        analytics_tokens_file: Path | None


def site_id_for(config: str | os.PathLike[str]) -> str:
    """The site id a config file implies: its folder's name, cut to the letters site_id allows."""
    folder = Path(config).resolve().parent.name
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", folder).strip("-.")[:64]
    return slug or DEFAULT_SITE_ID


# -- the flat names: TOML keys, CONSENT_GATEWAY_* variables, and where each one lives --------------


@dataclass(frozen=True, slots=True)
class FlatSetting:
    """One setting as docs/configuration.md lists it: its flat name, where it lives, how text is read."""

    name: str
    path: str
    kind: type | None
    default: Any
    secret: bool = False

    @property
    def env(self) -> str | None:
        """The environment variable, or None for settings written only as TOML tables."""
        return ENV_PREFIX + self.name.upper() if self.kind is not None else None


def _scalar_kind(hint: Any) -> type | None:
    """The type text is coerced to for a field type hint; None when no plain text can hold it."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if hint in (str, int, float, bool, Path):
        return typing.cast(type, hint)
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        return tuple
    return None


def _flat_settings() -> tuple[FlatSetting, ...]:
    out: list[FlatSetting] = []
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        group = _GROUPS.get(f.name)
        if group is None:
            out.append(FlatSetting(f.name, f.name, _scalar_kind(hints[f.name]), f.default))
            continue
        group_hints = typing.get_type_hints(group)
        for g in dataclasses.fields(group):
            flat = g.metadata["flat"]
            kind = _scalar_kind(group_hints[g.name])
            out.append(FlatSetting(flat, f"{f.name}.{g.name}", kind, g.default, bool(g.metadata["mask"])))
    return tuple(out)


FLAT_SETTINGS: tuple[FlatSetting, ...] = _flat_settings()
"""Every setting by its flat name, in the order of docs/configuration.md."""
_FLAT: dict[str, FlatSetting] = {s.name: s for s in FLAT_SETTINGS}
# What a text value (environment, TOML scalar) is coerced to, read from the field types.
_SCALARS: dict[str, type] = {s.name: s.kind for s in FLAT_SETTINGS if s.kind is not None}


# Compatibility layer (see the end of Settings): delete together with that block.
_FLAT_READERS: tuple[tuple[str, Callable[[Settings], Any]], ...] = tuple(
    (spec.name, operator.attrgetter(spec.path)) for spec in FLAT_SETTINGS if "." in spec.path
)


def _assemble(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings' fields from group objects and / or flat names; flat names win over their group."""
    own: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
    changes: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    for name, value in values.items():
        if name in own:
            own[name] = value
        elif name in _FLAT:
            group, _, attr = _FLAT[name].path.partition(".")
            changes[group][attr] = value
        else:
            raise SettingsError(name, value, _unknown(name, [*own, *_FLAT], "setting"))
    for group, attrs in changes.items():
        if attrs:
            own[group] = dataclasses.replace(own[group], **attrs)
    return own


def _unknown(name: str, known: Iterable[str], what: str, *, table: str = "") -> str:
    """The fix for an unknown name: the closest known one (in the same ``table``) when there is one."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {table + name!r}; {hint}see docs/configuration.md for the list"


# -- parsing ----------------------------------------------------------------------------------

# TOML tables whose keys become ``<table>_<key>`` settings.
_FLAT_TABLES = {
    "cookie": "cookie_",
    "retention": "",
    "pipeline": "",
    "collect": "collect_",
    "log": "log_",
    "rate_limit": "rate_limit_",
}
# Every top-level TOML name that is not a plain setting (for "did you mean").
_TABLES = (*_FLAT_TABLES, "categories", "cookies", "cookie_descriptions", "events", "event_props", "policy", "banner")


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(key, value, "use true or false")
    if kind is int:
        if isinstance(value, bool):
            raise SettingsError(key, value, "use a whole number")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(key, value, "use a whole number") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(key, value, "use a number") from None
    if kind is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        raise SettingsError(key, value, "use a list of strings (or a comma-separated string)")
    if kind is Path:
        return Path(str(value))
    if not isinstance(value, str):
        raise SettingsError(key, value, "use a string")
    return value


def _from_mapping(raw: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FLAT_TABLES and isinstance(value, Mapping):
            for sub, subvalue in value.items():
                name = _FLAT_TABLES[key] + sub
                if name not in _SCALARS:
                    known = [n[len(_FLAT_TABLES[key]) :] for n in _SCALARS if n.startswith(_FLAT_TABLES[key])]
                    raise SettingsError(f"{key}.{sub}", subvalue, _unknown(sub, known, "setting", table=f"{key}."))
                values[name] = _coerce(f"{key}.{sub}", subvalue, _SCALARS[name])
        elif key == "categories":
            values["categories"] = _categories(value)
        elif key == "cookies":
            values["cookie_registry"] = _registry("cookies", value)
        elif key == "cookie_descriptions":
            if not isinstance(value, Mapping):
                raise SettingsError(key, value, 'write one [cookie_descriptions."name"] table per cookie')
            values["cookie_descriptions"] = tuple(
                (str(name), CookieDescription.from_mapping(str(name), table)) for name, table in value.items()
            )
        elif key == "events":
            values["event_registry"] = _registry("events", value)
        elif key == "event_props":
            values["event_props"] = _event_props(value)
        elif key == "policy":
            values.update(_policy(value))
        elif key == "banner":
            values["banner"] = _banner(value)
        elif key in _SCALARS:
            values[key] = _coerce(key, value, _SCALARS[key])
        else:
            raise SettingsError(key, value, _unknown(key, [*_SCALARS, *_TABLES], "setting"))
    return values


def _categories(value: Any) -> tuple[Category, ...]:
    if not isinstance(value, list) or not value:
        raise SettingsError("categories", value, "write one [[categories]] table per category")
    allowed = {f.name for f in dataclasses.fields(Category)}
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise SettingsError(f"categories[{i}]", item, "each category is a table")
        unknown = set(item) - allowed
        if unknown:
            raise SettingsError(f"categories[{i}].{sorted(unknown)[0]}", item, f"allowed keys: {sorted(allowed)}")
        for needed in ("key", "name_ko", "name_en"):
            if not isinstance(item.get(needed), str) or not item.get(needed):
                raise SettingsError(f"categories[{i}].{needed}", item.get(needed), "give a non-empty string")
        out.append(Category(**{k: v for k, v in item.items()}))
    return tuple(out)


def _registry(name: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise SettingsError(name, value, f'write [{name}] with lines like "name" = "category"')
    return tuple((str(k), str(v)) for k, v in value.items())


def _event_props(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, Mapping):
        raise SettingsError("event_props", value, 'write [event_props] with lines like signup = ["plan", "step"]')
    out = []
    for event, keys in value.items():
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise SettingsError(f"event_props.{event}", keys, 'give a list of prop keys, e.g. ["plan", "step"]')
        out.append((str(event), tuple(keys)))
    return tuple(out)


def _policy(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SettingsError("policy", value, "write a [policy] table with version and effective")
    out: dict[str, Any] = {}
    if "version" in value or "effective" in value:
        out["policy"] = PolicyVersion.from_values("policy.version", value.get("version"), value.get("effective"))
    if "url" in value:
        out["policy_url"] = _coerce("policy.url", value["url"], str)
    upcoming = value.get("upcoming")
    if upcoming is not None:
        if not isinstance(upcoming, Mapping):
            raise SettingsError("policy.upcoming", upcoming, "write a [policy.upcoming] table")
        out["upcoming_policy"] = PolicyVersion.from_values(
            "policy.upcoming.version",
            upcoming.get("version"),
            upcoming.get("effective"),
            upcoming.get("announced"),
        )
    matrix = value.get("matrix")
    if matrix is not None:
        if not isinstance(matrix, Mapping):
            raise SettingsError("policy.matrix", matrix, 'write [policy.matrix] with visit = ["keep", "pseudonymise"]')
        rows = {k: (g, r) for k, g, r in ConsentSettings().matrix}
        for kind, pair in matrix.items():
            if not isinstance(pair, list) or len(pair) != 2:
                raise SettingsError(
                    f"policy.matrix.{kind}", pair, 'give [when granted, when not granted], e.g. ["keep", "drop"]'
                )
            rows[str(kind)] = (str(pair[0]), str(pair[1]))
        out["policy_matrix"] = tuple((k, g, r) for k, (g, r) in rows.items())
    unknown = set(value) - {"version", "effective", "url", "upcoming", "matrix"}
    if unknown:
        key = sorted(unknown)[0]
        raise SettingsError(f"policy.{key}", value[key], "allowed keys: version, effective, url, upcoming, matrix")
    return out


def _banner(value: Any) -> BannerTexts:
    if not isinstance(value, Mapping):
        raise SettingsError("banner", value, "write a [banner] table of title_ko, title_en, text_ko, text_en")
    allowed = {f.name for f in dataclasses.fields(BannerTexts)}
    for key, text in value.items():
        if key not in allowed:
            raise SettingsError(f"banner.{key}", text, f"allowed keys: {sorted(allowed)}")
        if not isinstance(text, str) or not text.strip():
            raise SettingsError(f"banner.{key}", text, "give a non-empty string")
    return BannerTexts(**dict(value))


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for env_key, raw in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key == ENV_PREFIX + "CONFIG":
            continue
        name = env_key[len(ENV_PREFIX) :].lower()
        if name not in _SCALARS:
            known = [ENV_PREFIX + n.upper() for n in _SCALARS]
            raise SettingsError(env_key, raw, _unknown(env_key, known, "variable"))
        values[name] = _coerce(env_key, raw, _SCALARS[name])
    return values


def _to_date(key: str, value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise SettingsError(key, value, "use a date like 2026-01-31")
