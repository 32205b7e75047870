"""Settings: one immutable object built from a TOML file and ``CONSENT_GATEWAY_*`` variables.

Every value is checked when the object is built, so a bad configuration stops the process at
start with a message that names the key, the value and the fix, never later on a request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError

ENV_PREFIX = "CONSENT_GATEWAY_"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CATEGORY_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_VERSION = re.compile(r"^(\d{1,4})\.(\d{1,4})$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
MIN_SECRET_LENGTH = 32
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


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A privacy-policy version ``MAJOR.MINOR`` with the date it takes effect."""

    major: int
    minor: int
    effective: dt.date
    announced: dt.date | None = None

    @classmethod
    def from_values(
        cls, key: str, version: object, effective: object, announced: object = None
    ) -> PolicyVersion:
        match = _VERSION.match(str(version)) if isinstance(version, str | int | float) else None
        if match is None:
            raise SettingsError(key, version, 'write the version as "MAJOR.MINOR", e.g. "1.0"')
        eff = _to_date(f"{key}.effective", effective)
        ann = None if announced is None else _to_date(f"{key}.announced", announced)
        return cls(int(match.group(1)), int(match.group(2)), eff, ann)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


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


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the gateway needs, validated once. Secrets never appear in the repr."""

    site_id: str = "default"
    data_dir: Path = Path("./data")
    # repr=False: an http(s) URL may carry the ClickHouse password (user:password@host).
    clickhouse_url: str = field(default="", repr=False)
    database: str = "consent_gateway"
    prefix: str = "/_consent"
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    pseudonym_key: str = field(default="", repr=False)
    cookie_name: str = "cg_consent"
    cookie_max_age_days: int = 365
    cookie_secure: bool = True
    cookie_domain: str = ""
    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    cookie_registry: tuple[tuple[str, str], ...] = ()
    unknown_cookie_category: str = "preferences"
    event_registry: tuple[tuple[str, str], ...] = (("pageview", "analytics"),)
    unknown_event_category: str = "analytics"
    # The category visits are governed by, and the one whose grant lets click ids be stored.
    visit_category: str = "analytics"
    marketing_category: str = "marketing"
    gpc_refuses: tuple[str, ...] = ("marketing",)
    policy: PolicyVersion = PolicyVersion(1, 0, dt.date(2026, 1, 1))
    upcoming_policy: PolicyVersion | None = None
    policy_url: str = "/privacy"
    policy_matrix: tuple[tuple[str, str, str], ...] = (
        ("visit", "keep", "pseudonymise"),
        ("analytics", "keep", "pseudonymise"),
        ("marketing", "keep", "drop"),
    )
    banner: BannerTexts = BannerTexts()
    inject_banner: bool = True
    google_consent_mode: bool = False
    default_locale: str = "ko"
    events_retention_months: int = 3
    receipts_retention_years: int = 5
    trusted_proxies: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    log_visit_assets: bool = False
    batch_size: int = 50_000
    flush_interval: float = 1.0
    queue_max: int = 100_000
    shutdown_timeout: float = 10.0
    collect_max_body: int = 32_768
    collect_max_events: int = 50
    verify_cache_size: int = 4096
    auto_migrate: bool | None = None
    cluster: str = ""
    log_level: str = "info"
    log_format: str = "json"
    k_anonymity: int = 5
    analytics_tokens_file: Path | None = None
    # Durable pipeline (docs/pipeline.md): journal, limits, group commit, ClickHouse retries.
    journal_enabled: bool = True
    journal_dir: Path | None = None
    journal_max_bytes: int = 512 * 1024 * 1024
    journal_segment_bytes: int = 16 * 1024 * 1024
    commit_window: float = 0.001
    visit_shed_fraction: float = 0.9
    collect_ack_timeout: float = 10.0
    insert_retry_initial: float = 0.25
    insert_retry_max: float = 30.0
    clickhouse_async_insert: bool = False
    salt_check_interval: float = 3600.0
    # Abuse limits (SECURITY.md): per-client token buckets per worker; 0 per minute turns one off.
    rate_limit_collect_per_minute: float = 600.0
    rate_limit_collect_burst: int = 120
    rate_limit_consent_per_minute: float = 30.0
    rate_limit_consent_burst: int = 20
    # Bots are stored with is_bot = 1 and left out of every analytics query and rollup; true drops them.
    drop_bots: bool = False
    max_event_names: int = 500

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived values -------------------------------------------------------------------

    @property
    def clickhouse_dsn(self) -> str:
        """The ClickHouse URL in force: the setting, or the embedded engine under ``data_dir``."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def migrate_at_start(self) -> bool:
        return self.embedded if self.auto_migrate is None else self.auto_migrate

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def journal_root(self) -> Path:
        """Where the pipeline's journal lives: ``journal_dir`` or ``data_dir/journal``."""
        return self.journal_dir or self.data_dir / "journal"

    @property
    def tokens_path(self) -> Path:
        """Where the analytics API's token hashes live (``analytics_tokens_file`` or under ``data_dir``)."""
        return self.analytics_tokens_file or self.keys_dir / "analytics_tokens.json"

    @property
    def category_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.categories)

    @property
    def required_categories(self) -> frozenset[str]:
        return frozenset(c.key for c in self.categories if c.required)

    def category(self, key: str) -> Category:
        for cat in self.categories:
            if cat.key == key:
                return cat
        raise KeyError(key)

    def policy_in_force(self, today: dt.date | None = None) -> PolicyVersion:
        """The version in force today: the upcoming one once its effective date has come."""
        today = today or dt.datetime.now(dt.UTC).date()
        up = self.upcoming_policy
        if up is not None and up.effective <= today:
            return up
        return self.policy

    def announced_policy(self, today: dt.date | None = None) -> PolicyVersion | None:
        """The upcoming version while it is announced but not yet in force."""
        today = today or dt.datetime.now(dt.UTC).date()
        up = self.upcoming_policy
        if up is not None and up.effective > today:
            return up
        return None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> Settings:
        """Read a TOML file; ``overrides`` win over the file."""
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
            values = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
        values.update(_from_environ(environ))
        values.update(overrides)
        return cls(**values)


# -- parsing ----------------------------------------------------------------------------------

_SCALARS: dict[str, type] = {
    "site_id": str,
    "data_dir": Path,
    "clickhouse_url": str,
    "database": str,
    "prefix": str,
    "secret_keys": tuple,
    "pseudonym_key": str,
    "cookie_name": str,
    "cookie_max_age_days": int,
    "cookie_secure": bool,
    "cookie_domain": str,
    "unknown_cookie_category": str,
    "unknown_event_category": str,
    "visit_category": str,
    "marketing_category": str,
    "gpc_refuses": tuple,
    "policy_url": str,
    "inject_banner": bool,
    "google_consent_mode": bool,
    "default_locale": str,
    "events_retention_months": int,
    "receipts_retention_years": int,
    "trusted_proxies": tuple,
    "allowed_origins": tuple,
    "log_visit_assets": bool,
    "batch_size": int,
    "flush_interval": float,
    "queue_max": int,
    "shutdown_timeout": float,
    "collect_max_body": int,
    "collect_max_events": int,
    "verify_cache_size": int,
    "auto_migrate": bool,
    "cluster": str,
    "log_level": str,
    "log_format": str,
    "k_anonymity": int,
    "analytics_tokens_file": Path,
    "journal_enabled": bool,
    "journal_dir": Path,
    "journal_max_bytes": int,
    "journal_segment_bytes": int,
    "commit_window": float,
    "visit_shed_fraction": float,
    "collect_ack_timeout": float,
    "insert_retry_initial": float,
    "insert_retry_max": float,
    "clickhouse_async_insert": bool,
    "salt_check_interval": float,
    "rate_limit_collect_per_minute": float,
    "rate_limit_collect_burst": int,
    "rate_limit_consent_per_minute": float,
    "rate_limit_consent_burst": int,
    "drop_bots": bool,
    "max_event_names": int,
}
# TOML tables whose keys become ``<table>_<key>`` settings.
_FLAT_TABLES = {
    "cookie": "cookie_",
    "retention": "",
    "pipeline": "",
    "collect": "collect_",
    "log": "log_",
    "rate_limit": "rate_limit_",
}


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
                    raise SettingsError(f"{key}.{sub}", subvalue, "unknown setting; see docs/configuration.md")
                values[name] = _coerce(f"{key}.{sub}", subvalue, _SCALARS[name])
        elif key == "categories":
            values["categories"] = _categories(value)
        elif key == "cookies":
            values["cookie_registry"] = _registry("cookies", value)
        elif key == "events":
            values["event_registry"] = _registry("events", value)
        elif key == "policy":
            values.update(_policy(value))
        elif key == "banner":
            values["banner"] = _banner(value)
        elif key in _SCALARS:
            values[key] = _coerce(key, value, _SCALARS[key])
        else:
            raise SettingsError(key, value, "unknown setting; see docs/configuration.md for the list")
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


def _policy(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SettingsError("policy", value, "write a [policy] table with version and effective")
    out: dict[str, Any] = {}
    if "version" in value or "effective" in value:
        out["policy"] = PolicyVersion.from_values(
            "policy.version", value.get("version"), value.get("effective")
        )
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
        rows = dict((k, (g, r)) for k, g, r in Settings.policy_matrix)
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
        name = env_key[len(ENV_PREFIX):].lower()
        if name not in _SCALARS:
            raise SettingsError(env_key, raw, "unknown variable; see docs/configuration.md for the list")
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


# -- validation --------------------------------------------------------------------------------


def _validate(s: Settings) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", s.site_id):
        raise SettingsError("site_id", s.site_id, "use 1-64 letters, digits, '.', '-' or '_'")
    if not _IDENT.match(s.database):
        raise SettingsError("database", s.database, "use letters, digits and '_' (a ClickHouse identifier)")
    if not re.fullmatch(r"/[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*", s.prefix):
        raise SettingsError("prefix", s.prefix, 'start with "/" and use no trailing slash, e.g. "/_consent"')
    url = s.clickhouse_url
    if url and not url.startswith(("chdb://", "http://", "https://")):
        raise SettingsError("clickhouse_url", url, "use chdb:///path for the embedded engine or http(s)://host:port")
    for i, key in enumerate(s.secret_keys):
        if len(key) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"secret_keys[{i}]", "<hidden>",
                f"use at least {MIN_SECRET_LENGTH} characters; `consent-gateway keys secret` makes one",
            )
    if s.pseudonym_key and len(s.pseudonym_key) < MIN_SECRET_LENGTH:
        raise SettingsError(
            "pseudonym_key", "<hidden>",
            f"use at least {MIN_SECRET_LENGTH} characters; `consent-gateway keys secret` makes one",
        )
    if s.pseudonym_key and s.pseudonym_key in s.secret_keys:
        raise SettingsError("pseudonym_key", "<hidden>", "use a key of its own, not one of secret_keys")
    if not _COOKIE_NAME.match(s.cookie_name):
        raise SettingsError("cookie_name", s.cookie_name, "use a valid cookie name (letters, digits, _ - .)")
    if not 1 <= s.cookie_max_age_days <= 400:
        raise SettingsError(
            "cookie_max_age_days", s.cookie_max_age_days, "use 1 to 400 days (browsers cap cookies at 400)"
        )
    keys = [c.key for c in s.categories]
    for cat in s.categories:
        if not _CATEGORY_KEY.match(cat.key):
            raise SettingsError("categories.key", cat.key, "use lower-case letters, digits and '_'")
    if len(set(keys)) != len(keys):
        raise SettingsError("categories", keys, "each category key must appear once")
    if not any(c.required for c in s.categories):
        raise SettingsError("categories", keys, "mark one category required = true (strictly necessary cookies)")
    for name, registry in (("cookies", s.cookie_registry), ("events", s.event_registry)):
        for pattern, category in registry:
            if category not in keys:
                raise SettingsError(f"{name}.{pattern}", category, f"use one of the categories {keys}")
            if not pattern or len(pattern) > 128:
                raise SettingsError(name, pattern, "use a name or pattern of 1-128 characters")
    for key in ("unknown_cookie_category", "unknown_event_category"):
        if getattr(s, key) not in keys:
            raise SettingsError(key, getattr(s, key), f"use one of the categories {keys}")
    for cat in s.gpc_refuses:
        if cat not in keys:
            raise SettingsError("gpc_refuses", cat, f"use categories from {keys}")
        if cat in s.required_categories:
            raise SettingsError("gpc_refuses", cat, "a required category cannot be refused; remove it")
    for kind, granted, refused in s.policy_matrix:
        for value in (granted, refused):
            if value not in ACTIONS:
                raise SettingsError(f"policy.matrix.{kind}", value, f"use one of {list(ACTIONS)}")
    if s.default_locale not in ("ko", "en"):
        raise SettingsError("default_locale", s.default_locale, 'use "ko" or "en"')
    up = s.upcoming_policy
    if up is not None:
        cur = s.policy
        if (up.major, up.minor) <= (cur.major, cur.minor):
            raise SettingsError("policy.upcoming.version", str(up), f"use a version newer than {cur}")
        if up.announced is None:
            raise SettingsError("policy.upcoming.announced", None, "give the date the change was announced")
        needed = 30 if up.major > cur.major else 7
        if (up.effective - up.announced).days < needed:
            raise SettingsError(
                "policy.upcoming.effective", up.effective.isoformat(),
                f"a {'MAJOR' if needed == 30 else 'MINOR'} change needs {needed} days of notice; "
                f"set it on or after {(up.announced + dt.timedelta(days=needed)).isoformat()}",
            )
    if not 1 <= s.events_retention_months <= 120:
        raise SettingsError("events_retention_months", s.events_retention_months, "use 1 to 120 months")
    if not 1 <= s.receipts_retention_years <= 20:
        raise SettingsError("receipts_retention_years", s.receipts_retention_years, "use 1 to 20 years")
    for cidr in s.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise SettingsError("trusted_proxies", cidr, "use IP networks like 10.0.0.0/8 or 127.0.0.1") from None
    for origin in s.allowed_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise SettingsError("allowed_origins", origin, "use scheme://host[:port] with no path")
    positives = {
        "batch_size": s.batch_size,
        "queue_max": s.queue_max,
        "collect_max_body": s.collect_max_body,
        "collect_max_events": s.collect_max_events,
        "verify_cache_size": s.verify_cache_size,
        "rate_limit_collect_burst": s.rate_limit_collect_burst,
        "rate_limit_consent_burst": s.rate_limit_consent_burst,
        "max_event_names": s.max_event_names,
    }
    for key in ("rate_limit_collect_per_minute", "rate_limit_consent_per_minute"):
        if not 0 <= getattr(s, key) <= 1_000_000:
            raise SettingsError(key, getattr(s, key), "use 0 (no limit) up to 1000000 requests per minute")
    for key, number in positives.items():
        if number < 1:
            raise SettingsError(key, number, "use a number above zero")
    if not 0.01 <= s.flush_interval <= 60:
        raise SettingsError("flush_interval", s.flush_interval, "use 0.01 to 60 seconds")
    if not 1 <= s.k_anonymity <= 1000:
        raise SettingsError("k_anonymity", s.k_anonymity, "use 1 to 1000 distinct visitors (default 5)")
    if s.shutdown_timeout <= 0:
        raise SettingsError("shutdown_timeout", s.shutdown_timeout, "use a number of seconds above zero")
    if s.journal_segment_bytes < 4096:
        raise SettingsError("journal_segment_bytes", s.journal_segment_bytes, "use at least 4096 bytes")
    if s.journal_max_bytes < s.journal_segment_bytes:
        raise SettingsError(
            "journal_max_bytes", s.journal_max_bytes, f"use at least journal_segment_bytes ({s.journal_segment_bytes})"
        )
    if not 0 <= s.commit_window <= 1:
        raise SettingsError("commit_window", s.commit_window, "use 0 to 1 seconds (0-5 ms is typical)")
    if not 0.1 <= s.visit_shed_fraction <= 1:
        raise SettingsError("visit_shed_fraction", s.visit_shed_fraction, "use 0.1 to 1 (visits shed when this full)")
    if s.collect_ack_timeout <= 0:
        raise SettingsError("collect_ack_timeout", s.collect_ack_timeout, "use a number of seconds above zero")
    if not 0 < s.insert_retry_initial <= s.insert_retry_max:
        raise SettingsError(
            "insert_retry_initial",
            s.insert_retry_initial,
            f"use a number above zero, at most insert_retry_max ({s.insert_retry_max})",
        )
    if s.salt_check_interval <= 0:
        raise SettingsError("salt_check_interval", s.salt_check_interval, "use a number of seconds above zero")
    if s.cluster and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", s.cluster):
        raise SettingsError("cluster", s.cluster, "use the cluster name from the ClickHouse remote_servers config")
    if s.cluster and s.embedded:
        raise SettingsError(
            "cluster", s.cluster, "a cluster needs an http(s):// clickhouse_url; leave it empty for chdb"
        )
    if s.log_level not in LOG_LEVELS:
        raise SettingsError("log_level", s.log_level, f"use one of {list(LOG_LEVELS)}")
    if s.log_format not in ("json", "text"):
        raise SettingsError("log_format", s.log_format, 'use "json" (one JSON object a line) or "text"')
