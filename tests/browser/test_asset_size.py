"""Size budgets of the browser files, measured the way benchmarks/asset_size.py measures them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asset_size", ROOT / "benchmarks" / "asset_size.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_banner_and_tracker_within_budget() -> None:
    sizes = bench().sizes()
    assert sizes["banner.js"][1] + sizes["banner.css"][1] <= 8000
    assert sizes["tracker.js"][1] <= 1500


def test_browser_files_never_use_innerhtml_or_eval() -> None:
    """The rules of a strict CSP and of untrusted text, checked in the source itself."""
    for name in ("banner.js", "tracker.js"):
        source = (ROOT / "static" / name).read_text(encoding="utf-8")
        code = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert banned not in code, f"{name} uses {banned}"
        assert ".style." not in code and 'setAttribute("style"' not in code, f"{name} writes inline style"
