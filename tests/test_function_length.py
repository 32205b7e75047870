"""No function in the package runs over 60 lines: a longer one is split into named steps.

Only the demo site's page templates and the CLI's argument parser (one ``add_argument`` per line) are
allowed to be longer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import consent_gateway

PACKAGE = Path(consent_gateway.__file__).parent
MAX_LINES = 60
ALLOWED = {("cli.py", "build_parser")}
ALLOWED_DIRS = {"demo"}


def long_functions(root: Path, limit: int) -> list[tuple[str, str, int]]:
    """(module path relative to ``root``, function name, line count) of each function over ``limit``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append((path.relative_to(root).as_posix(), node.name, lines))
    return found


def test_no_function_over_sixty_lines() -> None:
    too_long = [
        (module, name, lines)
        for module, name, lines in long_functions(PACKAGE, MAX_LINES)
        if (module, name) not in ALLOWED and module.split("/")[0] not in ALLOWED_DIRS
    ]
    assert too_long == [], f"split these into named steps of at most {MAX_LINES} lines: {too_long}"


def test_the_walk_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n", encoding="utf-8")
    assert long_functions(tmp_path, MAX_LINES) == [("long.py", "long", MAX_LINES + 1)]
