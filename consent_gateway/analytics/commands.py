"""``consent-gateway stats`` and ``keys create|list|revoke``: the same queries from a terminal."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

from ..errors import ConsentGatewayError, SettingsError, StoreError
from ..serving import serving_process
from ..settings import Settings
from .params import FILTER_DIMENSIONS
from .queries import Result, run_query
from .tokens import TokenStore, share_link

TOKEN_ENV = "CONSENT_ANALYTICS_TOKEN"  # noqa: S105 - the name of a variable, not a secret
STATS_ENDPOINTS = ("aggregate", "timeseries", "breakdown", "funnel", "consent-rates")


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", choices=STATS_ENDPOINTS, help="which report to print")
    p.add_argument("--site", help="site_id to report on (default: the settings' site_id)")
    p.add_argument("--period", help="today, 7d, 30d, 90d, 6mo or 12mo (default 30d)")
    p.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (instead of --period)")
    p.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day (instead of --period)")
    p.add_argument("--interval", help="timeseries: hour, day, week or month")
    p.add_argument("--dimension", help="breakdown: page, entry_page, referrer_host, utm_*, browser, os, device, ...")
    p.add_argument("--limit", help="breakdown: most rows to show")
    p.add_argument("--steps", help="funnel: page:/a,page:/b,event:signup")
    p.add_argument("--window", help="funnel: seconds between the first and last step (default 1800)")
    p.add_argument("--source", help="auto, raw or rollup")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="DIMENSION=VALUE",
        help=f"one of {', '.join(FILTER_DIMENSIONS)}",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
    p.add_argument(
        "--url",
        help="ask a running server instead of reading the data: the analytics app (http://127.0.0.1:8001) "
        "or the demo's http://127.0.0.1:8000/_analytics; needed while it holds the embedded engine",
    )
    p.add_argument("--token", help=f"API token for --url (or set {TOKEN_ENV})")


def stats_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The command's options as API query parameters (the server or the local run validates them)."""
    pairs: list[tuple[str, str]] = []
    for name, value in (
        ("site", args.site),
        ("period", args.period),
        ("from", args.start),
        ("to", args.end),
        ("interval", args.interval),
        ("dimension", args.dimension),
        ("limit", args.limit),
        ("steps", args.steps),
        ("window", args.window),
        ("source", args.source),
    ):
        if value is not None:
            pairs.append((name, str(value)))
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep:
            raise SettingsError("--filter", item, "write it as DIMENSION=VALUE, e.g. device=mobile")
        pairs.append((name, value))
    return pairs


def run_stats(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """Print one endpoint's answer as a table, CSV or JSON."""
    out = out or sys.stdout
    pairs = stats_params(args)
    if args.url:
        body = _fetch(args.url, args.endpoint, pairs, args.token or os.environ.get(TOKEN_ENV, ""))
        result = Result(
            list(body["columns"]),
            list(body["results"]),
            {k: v for k, v in body.items() if k not in ("columns", "results")},
        )
    else:
        result = _run_locally(settings, args.endpoint, pairs)
    if args.format == "csv":
        out.write(result.as_csv())
    elif args.format == "json":
        out.write(json.dumps(result.as_json(), ensure_ascii=False, indent=1, default=str) + "\n")
    else:
        out.write(render_table(result))
    return 0


def _run_locally(settings: Settings, endpoint: str, pairs: list[tuple[str, str]]) -> Result:
    from ..store import migrate, open_store

    try:
        with _engine_output() as engine_said:
            store = open_store(settings.clickhouse_dsn, settings.database)
        if settings.migrate_at_start:
            migrate(
                store, events_months=settings.events_retention_months, receipts_years=settings.receipts_retention_years
            )
    except StoreError as exc:
        if settings.embedded and (_LOCKED in engine_said.text or _LOCKED in str(exc) or "Code: 76" in str(exc)):
            # The engine's own words (a C++ exception text) help no one here: say what to do instead.
            raise StoreError(locked_message(settings, endpoint, serving_process(settings.data_dir))) from None
        raise
    try:
        return run_query(store, settings, endpoint, pairs)
    finally:
        store.close()


_LOCKED = "Cannot lock file"




def locked_message(settings: Settings, endpoint: str, holder: dict[str, Any] | None) -> str:
    """Why the embedded engine cannot be read here, and exactly which command reads it instead."""
    data = settings.data_dir
    store = f"the embedded ClickHouse in {data}"
    token = f"a token: consent-gateway keys create NAME --data {data}"
    if holder is not None and holder.get("analytics_url"):
        return (
            f"{holder.get('who', 'a running gateway')} (pid {holder['pid']}) holds {store}; the engine opens in one "
            f"process only. Ask it instead:\n  consent-gateway stats {endpoint} --url {holder['analytics_url']} "
            f"--token TOKEN\n({token}; or set {TOKEN_ENV}), or stop it and run this again."
        )
    if holder is not None:
        return (
            f"{holder.get('who', 'a running gateway')} (pid {holder['pid']}) holds {store} and serves no analytics "
            "API; the engine opens in one process only. Stop it and run this again, or run the gateway on a "
            "ClickHouse server (clickhouse_url) so that `consent-gateway analytics` can read beside it."
        )
    return (
        f"another process holds {store}; the engine opens in one process only. If it is `consent-gateway demo`, "
        f"ask it: consent-gateway stats {endpoint} --url http://HOST:PORT/_analytics --token TOKEN; if it is "
        f"`consent-gateway analytics`: --url http://HOST:PORT (default port 8001). {token[0].upper() + token[1:]}. "
        "Or stop it and run this again."
    )


class _Captured:
    text = ""


@contextlib.contextmanager
def _engine_output() -> Iterator[_Captured]:
    """Hold back what the embedded engine writes straight to file descriptor 2 while it opens;
    pass it on unless the open failed (then the caller explains the failure in its own words)."""
    captured = _Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield captured
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read(65536).decode("utf-8", "replace")
            if captured.text and not failed:
                sys.stderr.write(captured.text)


def _fetch(url: str, endpoint: str, pairs: list[tuple[str, str]], token: str) -> dict[str, Any]:
    if not token:
        raise SettingsError("--token", "", f"give the API token with --token or {TOKEN_ENV}")
    full = f"{url.rstrip('/')}/api/v1/{endpoint}?{urllib.parse.urlencode([*pairs, ('format', 'json')])}"
    if not full.startswith(("http://", "https://")):
        raise SettingsError("--url", url, "use http://host:port of the analytics app")
    request = urllib.request.Request(full, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - scheme checked
            body: dict[str, Any] = json.loads(response.read().decode("utf-8"))
            return body
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode("utf-8")).get("error", "")
        except ValueError:
            message = ""
        raise ConsentGatewayError(f"{url} answered {exc.code}: {message or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ConsentGatewayError(
            f"cannot reach the analytics app at {url} ({exc.reason}); start it with `consent-gateway analytics` "
            "or leave out --url to read the data directly"
        ) from None


def render_table(result: Result) -> str:
    """An aligned text table, followed by what the reader must know (estimates, suppression)."""
    header = list(result.columns)
    cells = [["-" if row.get(c) is None else str(row.get(c)) for c in header] for row in result.rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if v.replace(".", "").isdigit() else v.ljust(w) for v, w in zip(r, widths, strict=True)
            )
        )
    meta = result.meta
    query = meta.get("query", {})
    if query:
        lines.append(
            f"\n{query.get('site')} {query.get('from')} .. {query.get('to')}  source={meta.get('source')}"
            f"  k={meta.get('k')}"
        )
    if meta.get("estimates"):
        lines.append(f"estimates: {', '.join(meta['estimates'])}")
    for key, note in meta.get("notes", {}).items():
        lines.append(f"  {key}: {note}")
    if any("-" in row for row in cells):
        lines.append(
            f'"-": suppressed, because fewer than k={meta.get("k", "k")} visitors are behind that number '
            "(k-anonymity keeps small groups from pointing at a person)"
        )
    if meta.get("suppressed_groups"):
        lines.append(
            f"{meta['suppressed_groups']} groups with fewer than k visitors are folded into 'other (suppressed)'"
        )
    return "\n".join(lines) + "\n"


def keys_command(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    """``keys create NAME [--expires DAYS] [--site SITE ...]``, ``keys list``, ``keys revoke NAME``."""
    out = out or sys.stdout
    tokens = TokenStore(settings.tokens_path)
    if args.keys_command == "create":
        sites = getattr(args, "site", None)
        token, record = tokens.create(args.name, sites=sites, expires_days=args.expires)
        out.write(f"{token}\n")
        print(
            f"token {record.name!r} created{' (expires ' + record.expires + ')' if record.expires else ''}; "
            "it is shown only this once and stored only as a hash",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "list":
        now = dt.datetime.now(dt.UTC)
        records = tokens.records()
        if not records:
            out.write(f"no tokens in {settings.tokens_path}; `consent-gateway keys create NAME` makes one\n")
        for r in records:
            out.write(
                f"{r.name:<24} {r.kind:<6} {r.status(now):<8} created {r.created}  expires {r.expires or 'never'}"
                f"  sites {','.join(r.readable_sites(settings.site_id))}\n"
            )
        return 0
    if args.keys_command == "share":
        site = args.site or settings.site_id
        token, record = tokens.create_share(site, expires_days=args.expires, name=args.name)
        out.write(f"{share_link(args.url, site, token)}\n")
        print(
            f"shared link {record.name!r} for site {site!r} created (expires {record.expires}); it reads that "
            f"site's dashboard only and is shown only this once; `consent-gateway keys revoke {record.name}` ends it",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "revoke":
        count = tokens.revoke(args.name)
        out.write(f"revoked {count} token(s) named {args.name!r}\n")
        return 0
    raise SettingsError("keys", args.keys_command, "use keys secret|create|share|list|revoke")
