"""The ``consent-gateway`` command."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConsentGatewayError, SettingsError
from .serving import mark_serving, unmark_serving
from .settings import Settings

DEMO_CONFIG = Path(__file__).resolve().parent / "demo" / "demo.toml"
# How `serve --workers N` hands its options to the worker processes uvicorn spawns. Not a
# CONSENT_GATEWAY_* name: Settings refuses unknown variables with that prefix.
SERVE_OPTIONS_ENV = "_CONSENT_GATEWAY_SERVE_OPTIONS"


KEYS_FILE_SUFFIX = ".keys.env"
KEY_VARIABLES = ("CONSENT_GATEWAY_SECRET_KEYS", "CONSENT_GATEWAY_PSEUDONYM_KEY")
# Written by every command that serves the data directory, so that `stats` can name the URL to ask
# while the embedded engine is locked by that process.


def keys_file_for(config: str | os.PathLike[str]) -> Path:
    """The key file `init` writes beside a settings file: ``consent.toml`` -> ``consent.keys.env``."""
    path = Path(config)
    return path.with_name(path.stem + KEYS_FILE_SUFFIX)


def read_keys_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a key file (the format of docker --env-file and systemd EnvironmentFile)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or name.strip() not in KEY_VARIABLES:
            # A line without "=" may be a pasted key: never echo it.
            shown = name.strip() if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", name.strip()) else "<hidden>"
            raise SettingsError(
                f"{path}:{number}", shown, f"write only {' and '.join(KEY_VARIABLES)} as NAME=value lines"
            )
        values[name.strip()] = value.strip()
    return values


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (or CONSENT_GATEWAY_CONFIG) and the environment, with the keys of the
    file `init` wrote beside it when the environment does not set them; ``data_dir`` made absolute once,
    so every command names the same store whatever folder it runs in."""
    path = config or os.environ.get("CONSENT_GATEWAY_CONFIG") or None
    environ: dict[str, str] = dict(os.environ)
    if path:
        for name, value in read_keys_file(keys_file_for(path)).items():
            environ.setdefault(name, value)
    settings = Settings.load(path, environ=environ, **overrides)
    if not settings.data_dir.is_absolute():
        settings = settings.replace(data_dir=settings.data_dir.resolve())
    return settings


def _settings(args: argparse.Namespace, *, say: bool = True, **overrides: Any) -> Settings:
    if getattr(args, "data", None):
        overrides["data_dir"] = Path(args.data).resolve()
    settings = load_settings(getattr(args, "config", None), **overrides)
    if say:
        _say_data(settings)
    return settings


def _say_data(settings: Settings) -> None:
    """Name the store a command uses, on stderr so that tokens and CSV on stdout stay clean."""
    print(f"data: {settings.data_dir}", file=sys.stderr, flush=True)


def missing_keys_error(settings: Settings, config: str | None) -> SettingsError | None:
    """One error naming every missing key and the two ways to get them, or None when both are set."""
    missing = [name for name in ("secret_keys", "pseudonym_key") if not getattr(settings, name)]
    if not missing:
        return None
    where = f"{keys_file_for(config)} (beside {config})" if config else "a key file beside your settings file"
    return SettingsError(
        " and ".join(missing),
        "",
        f"set {' and '.join('CONSENT_GATEWAY_' + m.upper() for m in missing)}, or keep them in {where}: "
        "`consent-gateway init` writes a settings file and its key file for your site; "
        "for a local trial, `--local-keys` makes and keeps keys under data_dir/keys",
    )


def _with_local_keys(settings: Settings) -> Settings:
    """Fill missing keys from the data directory's key file (demo and local runs)."""
    if settings.secret_keys and settings.pseudonym_key:
        return settings
    from .keys import local_keys

    secret_keys, pseudonym_key = local_keys(settings.keys_dir)
    return settings.replace(
        secret_keys=settings.secret_keys or secret_keys,
        pseudonym_key=settings.pseudonym_key or pseudonym_key,
    )


def _wrap(app: Any, settings: Settings) -> Any:
    """The gateway around ``app``, behind the request-id and access-log middleware."""
    from .gateway import ConsentGateway
    from .logs import RequestLogMiddleware, register_secrets

    register_secrets([*settings.secret_keys, settings.pseudonym_key])
    return RequestLogMiddleware(ConsentGateway(app, settings))


def _run(
    app: Any,
    host: str,
    port: int,
    settings: Settings,
    banner: list[str],
    workers: int = 1,
    *,
    analytics_url: str | None = None,
    who: str = "a running gateway",
) -> None:
    import uvicorn

    from .logs import configure_logging, log_config

    configure_logging(settings.log_level, settings.log_format)
    for line in banner:
        print(line, flush=True)
    serving = mark_serving(settings, who, analytics_url)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            factory=workers > 1,
            log_level=settings.log_level,
            log_config=log_config(settings.log_level, settings.log_format),
            access_log=False,  # it prints client addresses; RequestLogMiddleware logs requests instead
            # uvicorn's own proxy handling would believe X-Forwarded-For from 127.0.0.1 and rewrite the
            # client address before the gateway looks: trusted_proxies is the only source of proxy trust.
            proxy_headers=False,
            forwarded_allow_ips="",
            lifespan="on",
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
        )
    finally:
        unmark_serving(serving)


def proxy_trust_line(settings: Settings) -> str:
    """What the gateway believes about the client address; the runtime says it at every start."""
    from .runtime import proxy_trust_line as line

    return line(settings.trusted_proxies)






def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import create_demo_app

    data = Path(args.data).resolve()
    settings = _with_local_keys(load_settings(args.config or DEMO_CONFIG, data_dir=data))
    from .analytics import AnalyticsMount, create_analytics_app

    # The analytics app is mounted on purpose here, for the demo; production serves it on its own port.
    gateway = AnalyticsMount(_wrap(create_demo_app(), settings), create_analytics_app(settings), "/_analytics")
    base = f"http://{args.host}:{args.port}"
    _run(
        gateway,
        args.host,
        args.port,
        settings,
        [
            "consent-gateway demo",
            f"  site:            {base}/",
            f"  cookie settings: {base}{settings.prefix}/",
            f"  consent state:   {base}{settings.prefix}/state",
            f"  analytics:       {base}/_analytics/  (token: {_command()} keys create NAME --data {data})",
            f"  stats:           {_command()} stats aggregate --url {base}/_analytics --token TOKEN",
            f"  data:            {data}",
        ],
        analytics_url=f"{base}/_analytics",
        who="the demo",
    )
    return 0


def _command() -> str:
    """The command as it was typed (``.venv/bin/consent-gateway`` is not on every PATH)."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if Path(typed).name == "consent-gateway" else "consent-gateway"


def load_app(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError("app", target, "write it as module:attribute, e.g. mysite.main:app")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError("app", target, f"the module could not be imported ({exc})") from None
    app: object = module
    for part in attr.split("."):
        app = getattr(app, part, None)
        if app is None:
            raise SettingsError("app", target, f"{module_name} has no attribute {attr!r}")
    return app


def already_gated(app: Any) -> bool:
    """True when ``app`` is a ConsentGateway already, or a Starlette app with ConsentMiddleware (or the
    gateway) in its middleware: `serve` must not wrap it a second time (two banners, two visits)."""
    from .gateway import ConsentGateway
    from .logs import RequestLogMiddleware
    from .middleware import ConsentMiddleware

    while isinstance(app, RequestLogMiddleware):
        app = app.app
    if isinstance(app, ConsentGateway | ConsentMiddleware):
        return True
    for entry in getattr(app, "user_middleware", None) or ():
        cls = getattr(entry, "cls", None)
        if isinstance(cls, type) and issubclass(cls, ConsentGateway | ConsentMiddleware):
            return True
    return False


def _served_gateway(options: dict[str, Any]) -> tuple[Any, Settings]:
    overrides: dict[str, Any] = {"data_dir": Path(options["data"])} if options["data"] else {}
    settings = load_settings(options["config"], **overrides)
    app = load_app(options["app"])
    if options["factory"]:
        app = app()
    from .logs import RequestLogMiddleware

    if already_gated(app):
        own = [getattr(app, "settings", None)]
        own += [(getattr(m, "kwargs", None) or {}).get("settings") for m in getattr(app, "user_middleware", ())]
        # The gateway's own settings decide logging, proxy trust and the data directory.
        settings = next((o for o in own if isinstance(o, Settings)), settings)
        logging.getLogger("consent_gateway").info(
            "%s already runs the consent gateway; serving it as it is, not wrapped a second time", options["app"]
        )
        return (app if isinstance(app, RequestLogMiddleware) else RequestLogMiddleware(app)), settings
    if options["local_keys"]:
        settings = _with_local_keys(settings)
    problem = missing_keys_error(settings, options["config"] or os.environ.get("CONSENT_GATEWAY_CONFIG"))
    if problem is not None:
        raise problem
    return _wrap(app, settings), settings


def serve_app() -> Any:
    """uvicorn's app factory in each worker of `serve --workers N`: the same gateway, built again."""
    from .logs import configure_logging

    options = json.loads(os.environ[SERVE_OPTIONS_ENV])
    gateway, settings = _served_gateway(options)
    configure_logging(settings.log_level, settings.log_format)
    return gateway


def cmd_serve(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else _env_int("WEB_CONCURRENCY", 1, "worker processes")
    port = args.port if args.port is not None else _env_int("PORT", 8000, "the port to listen on")
    options = {
        "app": args.app,
        "config": args.config,
        "data": str(Path(args.data).resolve()) if args.data else None,
        "local_keys": args.local_keys,
        "factory": args.factory,
    }
    # Built here even with several workers: a bad setting, key or app fails once, before any fork.
    gateway, settings = _served_gateway(options)
    if workers < 1:
        raise SettingsError("--workers", workers, "use 1 or more worker processes")
    if workers > 1 and settings.embedded:
        raise SettingsError(
            "--workers",
            workers,
            f"the embedded ClickHouse ({settings.clickhouse_dsn}) runs inside one process and locks its data "
            "directory, so it serves one worker only: use --workers 1, or set clickhouse_url "
            "(CONSENT_GATEWAY_CLICKHOUSE_URL) to an http(s):// ClickHouse server to run several workers",
        )
    target: Any = gateway
    if workers > 1:
        os.environ[SERVE_OPTIONS_ENV] = json.dumps(options)
        target = "consent_gateway.cli:serve_app"
    banner = f"consent-gateway serving {args.app} on http://{args.host}:{port}/ with {workers} worker(s)"
    lines = [banner, f"  data: {settings.data_dir}"]
    _run(target, args.host, port, settings, lines, workers=workers, who=f"consent-gateway serve {args.app}")
    return 0


def _env_int(name: str, default: int, what: str) -> int:
    """A whole number from the environment (container platforms set PORT and WEB_CONCURRENCY)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SettingsError(name, raw, f"use a whole number for {what}, e.g. {default}")
    return int(raw)


def cmd_init(args: argparse.Namespace) -> int:
    config = Path(args.config).resolve()
    keys_path = keys_file_for(config)
    if config.exists() and not args.force:
        raise SettingsError(
            "--config",
            str(config),
            "the file exists already; check it with `consent-gateway check-config`, "
            "or add --force to write it again (its key file is kept)",
        )
    policy_url = args.policy_url
    if policy_url is None and sys.stdin.isatty():
        policy_url = input("URL of your privacy policy (blank to leave it out): ").strip() or None
    if policy_url and not policy_url.startswith(("/", "https://", "http://")):
        raise SettingsError("--policy-url", policy_url, "give a path like /privacy or a full https:// URL")
    site_id = args.site_id or default_site_id(config, policy_url)
    cookies = [name for item in args.cookie for name in item.split(",") if name.strip()]
    text = init_toml(site_id, policy_url, [c.strip() for c in cookies], dt.date.today(), keys_path.name)
    # Checked before anything is written: a bad --site-id or URL fails here, not at the first start.
    Settings(site_id=site_id, **({"policy_url": policy_url} if policy_url else {}))
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    made_keys = _write_keys_file(keys_path, site_id)
    settings = load_settings(config)
    app = args.app or "mysite.main:app"
    print(f"wrote {config}")
    print(
        f"{'wrote' if made_keys else 'kept'} {keys_path} (the keys, mode 0600: keep it secret and out of "
        "version control; production passes the same two variables in its environment)"
    )
    print(f"data: {settings.data_dir}")
    print("")
    print("Wrap your ASGI app with these three lines:")
    print("    from consent_gateway import ConsentGateway")
    print("    from consent_gateway.cli import load_settings")
    print(f"    app = ConsentGateway(app, load_settings({json.dumps(str(config))}))")
    print("")
    print("or serve it as it is:")
    print(f"    .venv/bin/consent-gateway serve {shlex.quote(app)} --config {shlex.quote(str(config))}")
    return 0


def default_site_id(config: Path, policy_url: str | None) -> str:
    """The policy URL's host, else the folder the settings live in, cut to what site_id accepts."""
    from urllib.parse import urlsplit

    host = urlsplit(policy_url).hostname if policy_url and "://" in policy_url else None
    raw = host or config.parent.name or "site"
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "-", raw).strip("-.")[:64]
    return cleaned or "site"


def catalogue_entry(name: str) -> tuple[str, str] | None:
    """(category, "provider: purpose") of a well-known cookie from the package's catalogue, or None."""
    from .catalogue import Catalogue

    entry = Catalogue.load().lookup(name)
    if entry is None:
        return None
    # One line in the written file: a purpose never carries a newline, but be sure.
    note = " ".join(f"{entry.provider}: {entry.purpose_en}".split())
    return entry.category, note


def init_toml(site_id: str, policy_url: str | None, cookies: list[str], today: dt.date, keys_name: str) -> str:
    """The commented settings file `init` writes."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [
        f"# consent-gateway settings for {site_id}, written by `consent-gateway init` on {today.isoformat()}.",
        "# Every setting is described in docs/configuration.md; check this file with",
        "#   .venv/bin/consent-gateway check-config consent.toml",
        f"# The keys are not in this file: they are in {keys_name} beside it (mode 0600), read by",
        "# `consent-gateway serve --config` and load_settings(); elsewhere set its two variables.",
        "",
        "# Names this site in every stored row and in the consent cookie.",
        f"site_id = {q(site_id)}",
        "# Journal, daily salts, analytics tokens and the embedded ClickHouse; relative to this file.",
        '# Set clickhouse_url = "https://user:password@host:8443" to use a ClickHouse server instead.',
        'data_dir = "data"',
        "",
        "# Addresses of your reverse proxies: X-Forwarded-For is believed from these only.",
        "trusted_proxies = []",
        "",
        "[cookie]",
        "# The consent cookie goes over https only. Browsers accept it on http://localhost too;",
        "# set false only for a plain-http trial on another host.",
        "secure = true",
        "",
        "[policy]",
        "# Raise the version when the policy changes: visitors are asked again.",
        'version = "1.0"',
        f"effective = {today.isoformat()}",
    ]
    if policy_url:
        lines.append(f"url = {q(policy_url)}")
    else:
        lines.append('# url = "https://example.com/privacy"   # the banner links to it once set')
    lines += [
        "",
        "# Your cookies and their categories: necessary, preferences, analytics, marketing.",
        "# A cookie not listed here is looked up in the well-known cookie catalogue (Django, Rails,",
        '# Laravel, Google Analytics, ...); one unknown to both counts as "preferences" and is removed',
        "# until the visitor allows that. An entry here overrides the catalogue.",
        '# Patterns work too: "_ga_*" = "analytics".',
        "[cookies]",
    ]
    unknown: list[str] = []
    for name in dict.fromkeys(cookies):
        entry = catalogue_entry(name)
        if entry is None:
            unknown.append(name)
            continue
        category, note = entry
        lines.append(f"{q(name)} = {q(category)}" + (f"   # {note}" if note else ""))
    for name in unknown:
        lines.append(f'# {q(name)} = "?"   # not in the cookie catalogue: choose its category')
    lines += [
        "",
        "# Events your pages send to /_consent/collect, and the category each needs.",
        "[events]",
        'pageview = "analytics"',
        "",
    ]
    return "\n".join(lines)


def _write_keys_file(path: Path, site_id: str) -> bool:
    """A 0600 key file with fresh keys; an existing one is kept (new keys would void every cookie)."""
    from .keys import new_secret

    if path.exists():
        return False
    text = (
        f"# consent-gateway keys of {site_id}. Secret: never commit or share this file.\n"
        "# Signing keys are newest last (comma-separated) so that a new key can be added without\n"
        "# voiding the cookies already given; the pseudonymisation key never changes.\n"
        f"CONSENT_GATEWAY_SECRET_KEYS={new_secret()}\n"
        f"CONSENT_GATEWAY_PSEUDONYM_KEY={new_secret()}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    source = args.config or os.environ.get("CONSENT_GATEWAY_CONFIG") or "environment"
    print(f"{source}:")
    for line in settings_summary(settings):
        print(f"  {line}")
    problem = missing_keys_error(settings, args.config or os.environ.get("CONSENT_GATEWAY_CONFIG"))
    if problem is not None:
        print(f"warning: {problem.key} missing: {problem.fix}")
    print("configuration is valid" + (" (keys must still be supplied at start)" if problem else ""))
    return 0


def settings_summary(settings: Settings) -> list[str]:
    """One readable line a setting group, secrets masked, and where the data lives."""
    return [*settings.summary(), f"data_dir (resolved): {settings.data_dir}"]


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store import migrate, open_store
    from .store.client import _redact
    from .store.schema import migration_statements

    settings = _settings(args)
    retention = {"events_months": settings.events_retention_months, "receipts_years": settings.receipts_retention_years}
    store = open_store(settings.clickhouse_dsn, settings.database)
    if args.print_sql:
        # For review before an upgrade: the full DDL of a new database, nothing executed.
        for statement in migration_statements(store, cluster=settings.cluster, **retention):
            print(f"{statement};\n")
        return 0
    applied = migrate(store, cluster=settings.cluster, **retention)
    where = _redact(settings.clickhouse_dsn) + (f" cluster {settings.cluster}" if settings.cluster else "")
    print(f"{where} database {settings.database}: applied {applied or 'nothing (up to date)'}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .keys import new_secret

    if args.keys_command == "secret":
        print(new_secret())
        return 0
    from .analytics.commands import keys_command

    return keys_command(args, _settings(args))


def cmd_analytics(args: argparse.Namespace) -> int:
    from .analytics import create_analytics_app
    from .logs import RequestLogMiddleware, register_secrets

    settings = _settings(args, say=False)  # the banner names it; stderr carries only log lines
    register_secrets([*settings.secret_keys, settings.pseudonym_key])
    base = f"http://{args.host}:{args.port}"
    _run(
        RequestLogMiddleware(create_analytics_app(settings)),  # request ids and access lines, no tokens
        args.host,
        args.port,
        settings,
        [
            "consent-gateway analytics",
            f"  dashboard: {base}/",
            f"  API:       {base}/api/v1/aggregate (Authorization: Bearer <token>)",
            f"  tokens:    {settings.tokens_path} (consent-gateway keys create NAME)",
            f"  data:      {settings.data_dir}",
        ],
        analytics_url=base,
        who="the analytics app",
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .analytics.commands import run_stats

    return run_stats(args, _settings(args, say=not args.url))  # with --url the server's store answers


def cmd_erase(args: argparse.Namespace) -> int:
    from .pseudonymize import SaltStore
    from .revocation import Revocations
    from .rows import RowBuilder
    from .runtime import REVOKED_FILE
    from .store import open_store
    from .store.statements import erase_visitor, identified_rows

    settings = _settings(args)
    if args.local_keys:
        settings = _with_local_keys(settings)
    if not settings.pseudonym_key:
        raise SettingsError("pseudonym_key", "", "erasure needs the pseudonymisation key to find the rows")
    # Revoked first, in the file the gateway's workers read: a cookie replayed after the erasure is
    # "no consent yet", never identified rows again under the erased id.
    Revocations(settings.keys_dir / REVOKED_FILE, max_age=settings.cookie_max_age_days * 86400).revoke(args.consent_id)
    rows = RowBuilder(settings, SaltStore(settings.keys_dir))
    store = open_store(settings.clickhouse_dsn, settings.database)
    visitor = rows.visitor_of(args.consent_id)
    count = identified_rows(store, visitor)
    erase_visitor(store, visitor, settings.cluster)
    print(f"erased {count} identifiable rows of consent id {args.consent_id[:4]}… and revoked the id for good")
    return 0


def cmd_visits(args: argparse.Namespace) -> int:
    from .store import migrate, open_store
    from .store.visits import build_closed_days, build_open_days, describe

    settings = _settings(args)
    store = open_store(settings.clickhouse_dsn, settings.database)
    months = settings.events_retention_months
    migrate(store, events_months=months, receipts_years=settings.receipts_retention_years, cluster=settings.cluster)
    built = build_closed_days(
        store, events_months=months, cluster=settings.cluster, progress=lambda day: print(describe(day), flush=True)
    )
    opened = build_open_days(
        store, cluster=settings.cluster, progress=lambda day: print(f"{describe(day)} (so far: still open)", flush=True)
    )
    print(
        f"visits: {len(built)} closed day(s) built; every other closed day was up to date; "
        f"{len(opened)} open day(s) built as far as settled"
    )
    return 0


CONFIG_HELP = "settings TOML file (default: $CONSENT_GATEWAY_CONFIG, else defaults and CONSENT_GATEWAY_* variables)"
DATA_HELP = "data directory: journal, keys, tokens, embedded ClickHouse (overrides data_dir; default ./data)"
HOST_HELP = "address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--data", help=DATA_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a commented consent.toml and its key file for your site")
    p.add_argument("--config", default="consent.toml", help="the settings file to write (default ./consent.toml)")
    p.add_argument("--site-id", help="name of the site (default: the policy URL's host, else the folder's name)")
    p.add_argument(
        "--policy-url", help="your privacy policy, /path or https:// URL (asked on a terminal; left out otherwise)"
    )
    p.add_argument(
        "--cookie",
        action="append",
        default=[],
        metavar="NAME",
        help="a cookie your app sets (repeat, or comma-separate); well-known ones get their category",
    )
    p.add_argument("--app", help="module:attribute of your ASGI app, for the printed serve command")
    p.add_argument("--force", action="store_true", help="write the settings file again; the key file is kept")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("demo", help="run the demo academy site behind the gateway on the embedded ClickHouse")
    p.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--data", default="./data", help="data directory (ClickHouse, keys, tokens); default ./data")
    p.add_argument("--config", help="a settings TOML to use instead of the demo's")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="wrap an ASGI app (module:app) in the gateway and serve it")
    p.add_argument("app", help="module:attribute of the ASGI app, e.g. mysite.main:app")
    p.add_argument("--config", help=CONFIG_HELP + "; its key file (NAME.keys.env) beside it is read too")
    p.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    p.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT or 8000)")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--local-keys", action="store_true", help="make and keep keys under data_dir/keys (development)")
    p.add_argument("--factory", action="store_true", help="module:attribute is a function that returns the app")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: WEB_CONCURRENCY or 1); more than 1 needs an http(s) ClickHouse",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate a settings file (and CONSENT_GATEWAY_* variables)")
    p.add_argument("config", nargs="?", help="settings TOML file (default: $CONSENT_GATEWAY_CONFIG)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("migrate", help="create or update the ClickHouse tables")
    _store_options(p)
    p.add_argument(
        "--print-sql", action="store_true", help="print the DDL (the cluster form if `cluster` is set); run nothing"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("keys", help="signing keys and analytics API tokens")
    keys = p.add_subparsers(dest="keys_command", required=True)
    keys.add_parser("secret", help="print a new signing or pseudonymisation key")
    k = keys.add_parser("create", help="make an analytics API token; it is printed once, stored as a hash")
    k.add_argument("name", help="a name to list and revoke the token by")
    k.add_argument("--expires", type=int, metavar="DAYS", help="days until the token stops working")
    k.add_argument(
        "--site",
        action="append",
        metavar="SITE",
        help="a site_id the token may read (repeat for several); default: the configured site_id only",
    )
    k = keys.add_parser("share", help="make a read-only shared link to one site's dashboard (printed once)")
    k.add_argument("--site", metavar="SITE", help="the site_id the link shows; default: the configured site_id")
    k.add_argument("--expires", type=int, default=30, metavar="DAYS", help="days until the link stops working (1-365)")
    k.add_argument("--name", help="a name to list and revoke the link by; default: share-SITE-<random>")
    k.add_argument(
        "--url",
        default="http://127.0.0.1:8001",
        help="where the dashboard is served (the analytics app; the demo's is http://HOST:PORT/_analytics)",
    )
    k = keys.add_parser("list", help="list analytics API tokens (names and dates, never the tokens)")
    k2 = keys.add_parser("revoke", help="revoke the analytics API token NAME")
    k2.add_argument("name", help="the name given at `keys create`")
    for k in keys.choices.values():
        _store_options(k)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("analytics", help="serve the analytics API and dashboard (token-authenticated)")
    _store_options(p)
    p.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    p.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001)")
    p.set_defaults(func=cmd_analytics)

    from .analytics.commands import add_stats_arguments

    p = sub.add_parser("stats", help="print analytics (aggregate, timeseries, breakdown, funnel) as a table or CSV")
    add_stats_arguments(p)
    _store_options(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("erase", help="erase the identifiable rows of one consent id")
    p.add_argument("consent_id", help="the visitor's consent id (shown on their receipts page)")
    _store_options(p)
    p.add_argument("--local-keys", action="store_true", help="read the keys kept under data_dir/keys (development)")
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("visits", help="store the visits of closed days (the gateway also does this every 10 minutes)")
    visits = p.add_subparsers(dest="visits_command", required=True)
    v = visits.add_parser("build", help="build the closed days never built or whose events changed, newest first")
    _store_options(v)
    v.set_defaults(func=cmd_visits)

    # The cookie inventory, the policy's cookie section and the audit exports (docs/cookies.md).
    from .audit import add_audit_parser
    from .inventory_cli import add_cookies_parser, add_policy_section_parser

    add_cookies_parser(sub)
    add_policy_section_parser(sub)
    add_audit_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConsentGatewayError as exc:
        print(f"consent-gateway: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
