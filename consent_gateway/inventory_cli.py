"""``consent-gateway cookies`` and ``consent-gateway policy-section``: the inventory for people.

``add_cookies_parser(sub)`` and ``add_policy_section_parser(sub)`` add the subcommands to the
``consent-gateway`` parser; each sets ``func`` to the command, which returns the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .declaration import build_declaration, policy_section
from .errors import SettingsError, StoreError
from .inventory import (
    SESSION,
    SOURCE_CATALOGUE,
    SOURCE_UNCLASSIFIED,
    Classifier,
    CookieSummary,
    InventoryReport,
    installed_catalogue,
    read_inventory,
)
from .settings import Settings

FORMATS = ("table", "json", "toml")


def _load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data", None):
        overrides["data_dir"] = Path(args.data).resolve()
    return Settings.load(getattr(args, "config", None), **overrides)


def _report(settings: Settings, days: int) -> InventoryReport:
    from .store import open_store

    if not 1 <= days <= 3660:
        raise SettingsError("--days", days, "use 1 to 3660 days")

    store = open_store(settings.clickhouse_dsn, settings.database)
    try:
        return read_inventory(store, settings.site_id, days=days)
    finally:
        store.close()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="settings TOML (default: CONSENT_GATEWAY_CONFIG)")
    p.add_argument("--data", help="data directory (overrides data_dir)")
    p.add_argument("--days", type=int, default=90, help="how many days back to read the inventory (default 90)")


def add_cookies_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``cookies`` to the subcommands ``sub`` (from ``parser.add_subparsers()``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "cookies", help="the live cookie inventory: every cookie name the site sets or browsers send back"
    )
    _common(p)
    p.add_argument("--unclassified", action="store_true", help="only names neither registry nor catalogue knows")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default), json, or toml: [cookies] lines to paste for the unclassified names",
    )
    p.set_defaults(func=cookies_command)
    return p


def cookies_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the inventory as a table, JSON, or registry lines to paste."""
    out = out or sys.stdout
    settings = _load_settings(args)
    report = _report(settings, args.days)
    # Sources as of today's registry and catalogue, which may know names they did not know when seen.
    classifier = Classifier.from_settings(settings, installed_catalogue())
    cookies = tuple(dataclasses.replace(c, source=classifier.classify(c.name)[1]) for c in report.cookies)
    if args.format == "toml":
        # Every name the site's own registry lacks: the catalogue's suggestion is for the site to confirm.
        cookies = tuple(c for c in cookies if c.source in (SOURCE_UNCLASSIFIED, SOURCE_CATALOGUE))
    elif args.unclassified:
        cookies = tuple(c for c in cookies if c.source == SOURCE_UNCLASSIFIED)
    if args.format == "json":
        json.dump(
            {"cookies": [c.as_json() for c in cookies], "overflow": report.overflow}, out, ensure_ascii=False, indent=2
        )
        out.write("\n")
    elif args.format == "toml":
        out.write(registry_lines(cookies, classifier, settings))
    else:
        out.write(inventory_table(cookies))
        if report.overflow:
            out.write(
                f"\n{report.overflow} sightings of further names were not kept: the inventory's bounds were reached.\n"
            )
    return 0


def _flags(c: CookieSummary) -> str:
    flags = [f for f, on in (("HttpOnly", c.http_only), ("Secure", c.secure)) if on]
    if c.same_site:
        flags.append(f"SameSite={c.same_site}")
    return ",".join(flags) or "-"


def _lifetime(c: CookieSummary) -> str:
    if not c.set_count:
        return "?"
    if c.lifetime_seconds == SESSION:
        return "session"
    days = c.lifetime_seconds / 86400
    return f"{days:.0f}d" if days >= 1 else f"{c.lifetime_seconds}s"


def inventory_table(cookies: tuple[CookieSummary, ...]) -> str:
    """The inventory as an aligned text table."""
    head = (
        "name",
        "category",
        "source",
        "set by",
        "set",
        "requests",
        "blocked",
        "no consent",
        "lifetime",
        "flags",
        "last seen",
        "top path",
    )
    rows = [
        (
            c.name,
            c.category,
            c.source,
            c.set_by,
            str(c.set_count),
            str(c.request_count),
            str(c.blocked),
            str(c.before_consent),
            _lifetime(c),
            _flags(c),
            c.last_seen.strftime("%Y-%m-%d %H:%M"),
            c.top_paths[0][0] if c.top_paths else "-",
        )
        for c in cookies
    ]
    if not rows:
        return "no cookie names in the inventory for these days\n"
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]
    return "\n".join(lines) + "\n"


def registry_lines(cookies: tuple[CookieSummary, ...], classifier: Classifier, settings: Settings) -> str:
    """``[cookies]`` lines for names the registry lacks: the catalogue's category where it has one, else the default."""
    if not cookies:
        return "# every cookie name seen is in the registry\n"
    out = [
        f"# {len(cookies)} cookie name(s) the registry does not know; check each category, then paste under [cookies].",
        "[cookies]",
    ]
    for c in cookies:
        entry = classifier.catalogue_entry(c.name)
        key = json.dumps(c.name, ensure_ascii=False)
        if entry is not None:
            note = f"catalogue: {entry.provider}, {entry.purpose_en}"
            category = entry.category
        else:
            where = c.top_paths[0][0] if c.top_paths else "requests only"
            note = (
                f"no suggestion: set by {c.set_by}, seen at {where}; now treated as {settings.cookie.unknown_category}"
            )
            category = settings.cookie.unknown_category
        out.append(f"{key} = {json.dumps(category)}  # {_comment(note)}")
    return "\n".join(out) + "\n"


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:160]


def add_policy_section_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``policy-section`` to the subcommands ``sub``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "policy-section",
        help="print the privacy policy's cookie section (PIPA Art. 30(1)7) from what the site really sets",
    )
    _common(p)
    p.add_argument("--lang", choices=("ko", "en", "both"), default="both", help="ko, en or both (default)")
    p.add_argument("--format", choices=("markdown", "html"), default="markdown", help="markdown (default) or html")
    p.add_argument(
        "--no-inventory", action="store_true", help="use only the registry and catalogue (no ClickHouse read)"
    )
    p.set_defaults(func=policy_section_command)
    return p


def policy_section_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the cookie section of the privacy policy in Korean, English, or both."""
    out = out or sys.stdout
    settings = _load_settings(args)
    report = None
    if not args.no_inventory:
        try:
            report = _report(settings, args.days)
        except StoreError as exc:
            print(
                f"consent-gateway: warning: the inventory could not be read ({exc}); "
                "the section lists the registry and catalogue only",
                file=sys.stderr,
            )
    declaration = build_declaration(settings, Classifier.from_settings(settings, installed_catalogue()), report)
    locales = ("ko", "en") if args.lang == "both" else (args.lang,)
    out.write(
        "\n".join(policy_section(declaration, locale=loc, fmt=args.format, prefix=settings.prefix) for loc in locales)
    )
    return 0


def unclassified_names(report: InventoryReport) -> list[str]:
    """The names of the report nobody classified (for checks and alerts)."""
    return [c.name for c in report.cookies if c.source == SOURCE_UNCLASSIFIED]
