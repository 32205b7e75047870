"""``consent-gateway cookies`` and ``policy-section``, run in-process on an inventory in the real engine."""

from __future__ import annotations

import argparse
import io
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consent_gateway import Settings, SettingsError, inventory_cli
from consent_gateway.inventory import Classifier, CookieInventory, create_inventory_table, flush_inventory
from consent_gateway.store import Store
from consent_gateway.store.schema import migrate

from .conftest import CHDB_URL, PSEUDONYM_KEY, SECRET
from .test_inventory import catalogue


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONSENT_GATEWAY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path, database: str, store: Store, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file on the test's database, whose inventory holds registered, catalogued and unknown names."""
    path = tmp_path / "consent.toml"
    path.write_text(
        f'site_id = "test-site"\nclickhouse_url = "{CHDB_URL}"\ndatabase = "{database}"\n'
        f'secret_keys = ["{SECRET}"]\npseudonym_key = "{PSEUDONYM_KEY}"\n'
        '[cookies]\n"palette_session" = "necessary"\n"_mk_*" = "marketing"\n',
        encoding="utf-8",
    )
    settings = Settings.load(path)
    migrate(store)
    create_inventory_table(store)
    # The inventory was gathered before the catalogue knew "_hj_session"; the command asks it again.
    inventory = CookieInventory(Classifier.from_settings(settings))
    inventory.observe_set_cookie(
        "palette_session=v; HttpOnly; Secure; SameSite=Lax", path="/", granted=True, blocked=False
    )
    inventory.observe_set_cookie("_mk_pixel=v; Max-Age=86400", path="/shop", granted=False, blocked=True)
    inventory.observe_set_cookie('we"ird=v', path="/", granted=True, blocked=False)
    inventory.observe_request_cookies(["_hj_session"], path="/", granted=[])
    flush_inventory(store, inventory, "test-site")
    known = dict(CATALOGUE_EXTRA)
    monkeypatch.setattr(inventory_cli, "installed_catalogue", lambda: lambda n: known.get(n) or catalogue(n))
    return path


CATALOGUE_EXTRA = {"_hj_session": ("Hotjar", "analytics", "세션 기록", "Session recording", 1800)}


def _run(builder: Callable[[Any], argparse.ArgumentParser], argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    builder(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    assert args.func(args, out) == 0
    return out.getvalue()


def test_table(config: Path) -> None:
    text = _run(inventory_cli.add_cookies_parser, ["cookies", "--config", str(config)])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["name", "category", "source"]
    by = {line.split()[0]: line for line in lines[1:]}
    assert set(by) == {"palette_session", "_mk_pixel", "_hj_session", 'we"ird'}
    assert "HttpOnly,Secure,SameSite=Lax" in by["palette_session"] and "session" in by["palette_session"]
    assert "/shop" in by["_mk_pixel"] and "1d" in by["_mk_pixel"]
    only = _run(inventory_cli.add_cookies_parser, ["cookies", "--config", str(config), "--unclassified"])
    # Sources are as of today's catalogue, which knows "_hj_session" by now.
    assert {line.split()[0] for line in only.splitlines()[1:]} == {'we"ird'}
    assert by["_hj_session"].split()[2:4] == ["catalogue", "script"]


def test_json(config: Path) -> None:
    text = _run(inventory_cli.add_cookies_parser, ["cookies", "--config", str(config), "--format", "json"])
    data = json.loads(text)
    by = {c["name"]: c for c in data["cookies"]}
    assert by["_mk_pixel"]["blocked"] == 1 and by["_mk_pixel"]["category"] == "marketing"
    assert by["_mk_pixel"]["top_paths"] == [{"path": "/shop", "count": 1}]
    assert by["_hj_session"]["set_by"] == "script" and data["overflow"] == 0


def test_toml_lines_paste_into_a_valid_registry(config: Path) -> None:
    text = _run(inventory_cli.add_cookies_parser, ["cookies", "--config", str(config), "--format", "toml"])
    parsed = tomllib.loads(text)
    assert parsed == {"cookies": {"_hj_session": "analytics", 'we"ird': "preferences"}}
    assert "catalogue: Hotjar, Session recording" in text and "no suggestion" in text
    # Pasted into the settings, the names are classified by the registry from then on.
    registry = tuple(parsed["cookies"].items())
    Settings(cookie_registry=registry)


def test_policy_section_command(config: Path) -> None:
    text = _run(inventory_cli.add_policy_section_parser, ["policy-section", "--config", str(config), "--lang", "ko"])
    assert text.startswith("## 개인정보 자동수집 장치의 설치·운영 및 거부에 관한 사항")
    assert "| _mk_pixel |" in text and "| palette_session |" in text
    assert "_hj_session" in text  # the catalogue knows it now: declared, with its provider
    assert "Hotjar" in text
    both = _run(
        inventory_cli.add_policy_section_parser, ["policy-section", "--config", str(config), "--format", "html"]
    )
    assert both.count("<section>") == 2 and "Refusing cookies" in both


def test_days_out_of_range_name_the_fix(config: Path) -> None:
    with pytest.raises(SettingsError, match="1 to 3660 days"):
        _run(inventory_cli.add_cookies_parser, ["cookies", "--config", str(config), "--days", "0"])
