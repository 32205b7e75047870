"""SQL is written in store/ (the gateway's statements and DDL) and analytics/queries.py only.

Elsewhere a module calls a named statement, so a change of table or column is made in one place.
The demo site is not part of the gateway and is left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import consent_gateway

PACKAGE = Path(consent_gateway.__file__).parent
ALLOWED = ("store/", "analytics/queries.py", "demo/")
# A statement keyword followed by what only SQL puts after it.
SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+INTO|DELETE\s+FROM|ALTER\s+TABLE)", re.IGNORECASE)


def sql_strings(root: Path) -> list[tuple[str, int, str]]:
    """(module path relative to ``root``, line, text) of every string literal that holds SQL, docstrings
    excepted; an f-string counts with its literal parts."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if SQL.search(node.value):
                    found.append((path.relative_to(root).as_posix(), node.lineno, node.value[:60]))
    return found


def test_sql_is_only_in_the_store_and_the_analytics_queries() -> None:
    outside = [hit for hit in sql_strings(PACKAGE) if not hit[0].startswith(ALLOWED)]
    assert outside == [], f"move these statements into consent_gateway/store/statements.py: {outside}"


def test_the_scan_finds_sql_and_skips_docstrings(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        '"""SELECT x FROM y in prose."""\n\n\ndef f(t):\n    return f"SELECT name FROM {t}"\n', encoding="utf-8"
    )
    assert sql_strings(tmp_path) == [("m.py", 5, "SELECT name FROM ")]
