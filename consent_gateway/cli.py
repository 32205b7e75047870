"""The ``consent-gateway`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConsentGatewayError, SettingsError
from .settings import Settings

DEMO_CONFIG = Path(__file__).resolve().parent / "demo" / "demo.toml"
# How `serve --workers N` hands its options to the worker processes uvicorn spawns. Not a
# CONSENT_GATEWAY_* name: Settings refuses unknown variables with that prefix.
SERVE_OPTIONS_ENV = "_CONSENT_GATEWAY_SERVE_OPTIONS"


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    config = getattr(args, "config", None)
    if getattr(args, "data", None):
        overrides["data_dir"] = Path(args.data).resolve()
    return Settings.load(config, **overrides)


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


def _run(app: Any, host: str, port: int, settings: Settings, banner: list[str], workers: int = 1) -> None:
    import uvicorn

    from .logs import configure_logging, log_config

    configure_logging(settings.log_level, settings.log_format)
    for line in banner:
        print(line, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        factory=workers > 1,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
        access_log=False,  # it prints client addresses; RequestLogMiddleware logs requests instead
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import create_demo_app

    data = Path(args.data).resolve()
    settings = Settings.load(args.config or DEMO_CONFIG, data_dir=data)
    settings = _with_local_keys(settings)
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
            f"  analytics:       {base}/_analytics/  (token: consent-gateway keys create NAME --data {data})",
            f"  data:            {settings.clickhouse_dsn}",
        ],
    )
    return 0


def load_app(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError("app", target, "write it as module:attribute, e.g. mysite.main:app")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError("app", target, f"the module could not be imported ({exc})") from None
    app = module
    for part in attr.split("."):
        app = getattr(app, part, None)
        if app is None:
            raise SettingsError("app", target, f"{module_name} has no attribute {attr!r}")
    return app


def _served_gateway(options: dict[str, Any]) -> tuple[Any, Settings]:
    overrides: dict[str, Any] = {"data_dir": Path(options["data"])} if options["data"] else {}
    settings = Settings.load(options["config"], **overrides)
    if options["local_keys"]:
        settings = _with_local_keys(settings)
    app = load_app(options["app"])
    if options["factory"]:
        app = app()
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
    _run(target, args.host, port, settings, [banner], workers=workers)
    return 0


def _env_int(name: str, default: int, what: str) -> int:
    """A whole number from the environment (container platforms set PORT and WEB_CONCURRENCY)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SettingsError(name, raw, f"use a whole number for {what}, e.g. {default}")
    return int(raw)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = Settings.load(args.config)
    problems = []
    if not settings.secret_keys:
        problems.append("secret_keys is empty: set CONSENT_GATEWAY_SECRET_KEYS (`consent-gateway keys secret`)")
    if not settings.pseudonym_key:
        problems.append("pseudonym_key is empty: set CONSENT_GATEWAY_PSEUDONYM_KEY (`consent-gateway keys secret`)")
    print(f"{args.config or 'environment'}: {settings!r}")
    for problem in problems:
        print(f"warning: {problem}")
    print("configuration is valid" + (" (keys must still be supplied at start)" if problems else ""))
    return 0


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

    settings = _settings(args)
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
            f"  data:      {settings.clickhouse_dsn}",
        ],
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .analytics.commands import run_stats

    return run_stats(args, _settings(args))


def cmd_erase(args: argparse.Namespace) -> int:
    from .pseudonymize import SaltStore
    from .rows import RowBuilder
    from .store import open_store

    settings = _settings(args)
    if args.local_keys:
        settings = _with_local_keys(settings)
    if not settings.pseudonym_key:
        raise SettingsError("pseudonym_key", "", "erasure needs the pseudonymisation key to find the rows")
    rows = RowBuilder(settings, SaltStore(settings.keys_dir))
    store = open_store(settings.clickhouse_dsn, settings.database)
    visitor = rows.visitor_of(args.consent_id)
    count = store.query_rows(
        f"SELECT count() FROM {store.table('events')} WHERE identified = 1 AND visitor = {{v:UInt64}}",  # noqa: S608
        {"v": visitor},
    )[0][0]
    from .store.cluster import render

    # On a cluster the rows live in the replicated local tables; the Distributed one cannot DELETE.
    # The visitor key is our own 64-bit hash, so it goes in as an integer literal: ON CLUSTER
    # statements are forwarded to every node as text, without query parameters.
    delete = f"DELETE FROM {store.table('events')} WHERE identified = 1 AND visitor = {int(visitor)}"  # noqa: S608
    for statement in render([delete], settings.cluster):
        store.command(statement)
    print(f"erased {count} identifiable rows of consent id {args.consent_id[:4]}…")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the demo academy site behind the gateway on the embedded ClickHouse")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data", default="./data", help="data directory (ClickHouse, keys); default ./data")
    p.add_argument("--config", help="a settings TOML to use instead of the demo's")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="wrap an ASGI app (module:app) in the gateway and serve it")
    p.add_argument("app", help="module:attribute of the ASGI app")
    p.add_argument("--config", help="settings TOML (default: CONSENT_GATEWAY_CONFIG)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: PORT or 8000")
    p.add_argument("--data", help="data directory (overrides data_dir)")
    p.add_argument("--local-keys", action="store_true", help="make and keep keys under data_dir/keys (development)")
    p.add_argument("--factory", action="store_true", help="module:attribute is a function that returns the app")
    p.add_argument(
        "--workers", type=int, default=None,
        help="worker processes (default: WEB_CONCURRENCY or 1); more than 1 needs an http(s) ClickHouse",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate a settings file (and CONSENT_GATEWAY_* variables)")
    p.add_argument("config", nargs="?")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("migrate", help="create or update the ClickHouse tables")
    p.add_argument("--config")
    p.add_argument("--data")
    p.add_argument(
        "--print-sql", action="store_true", help="print the DDL (the cluster form if `cluster` is set); run nothing"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("keys", help="signing keys and analytics API tokens")
    keys = p.add_subparsers(dest="keys_command", required=True)
    keys.add_parser("secret", help="print a new signing or pseudonymisation key")
    k = keys.add_parser("create", help="make an analytics API token; it is printed once, stored as a hash")
    k.add_argument("name")
    k.add_argument("--expires", type=int, metavar="DAYS", help="days until the token stops working")
    k = keys.add_parser("list", help="list analytics API tokens (names and dates, never the tokens)")
    k2 = keys.add_parser("revoke", help="revoke the analytics API token NAME")
    k2.add_argument("name")
    for k in keys.choices.values():
        k.add_argument("--config")
        k.add_argument("--data")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("analytics", help="serve the analytics API and dashboard (token-authenticated)")
    p.add_argument("--config")
    p.add_argument("--data")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.set_defaults(func=cmd_analytics)

    from .analytics.commands import add_stats_arguments

    p = sub.add_parser("stats", help="print analytics (aggregate, timeseries, breakdown, funnel) as a table or CSV")
    add_stats_arguments(p)
    p.add_argument("--config")
    p.add_argument("--data")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("erase", help="erase the identifiable rows of one consent id")
    p.add_argument("consent_id")
    p.add_argument("--config")
    p.add_argument("--data")
    p.add_argument("--local-keys", action="store_true")
    p.set_defaults(func=cmd_erase)
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
