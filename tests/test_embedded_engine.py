"""Opening the embedded engine leaves the process's C string formatting alone.

chdb imports pyarrow when it can, pyarrow imports numpy, and numpy's bundled libquadmath registers
printf hooks that slow every ``sprintf`` in the process (``consent_gateway/store/client.py``).
Each check runs in a fresh interpreter: this test process has its own engine and may have loaded
numpy already (the load-test charts use matplotlib).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_OPEN_AND_REPORT = """
import json, sys
{before}
from consent_gateway.store.client import open_store
store = open_store("chdb://" + sys.argv[1], "default")
store.command("CREATE TABLE IF NOT EXISTS t (n UInt32) ENGINE = MergeTree ORDER BY n")
from consent_gateway.store.schema import migrate
migrate(store)
store.insert_lines("t", [b"[1]", b"[2]"], ["n"])
store.insert_lines("t", [b"[4]"], ["n"])
rows = store.query_rows("SELECT count(), sum(n) FROM t")
loaded = sorted(name for name in ("pyarrow", "numpy", "pandas") if name in sys.modules)
import chdb.state.sqlitelike as conn_module
has_arrow = conn_module.pa is not None
import pyarrow
print(json.dumps({{"rows": [list(r) for r in rows], "loaded": loaded, "chdb_arrow": has_arrow,
                  "pyarrow_after": pyarrow.__name__}}))
"""


def _run(tmp_path: Path, before: str = "") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_REPORT.format(before=before), str(tmp_path / "engine")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_engine_opens_without_loading_numpy_and_still_answers(tmp_path: Path) -> None:
    out = _run(tmp_path)
    assert out["loaded"] == []
    assert out["chdb_arrow"] is False  # chdb runs without its optional Arrow support
    assert out["pyarrow_after"] == "pyarrow"  # hidden only while chdb's connection module loaded
    assert out["rows"] == [[3, 7]]  # migrations, inserts and a query work


def test_an_app_that_already_uses_pyarrow_keeps_chdb_arrow_support(tmp_path: Path) -> None:
    out = _run(tmp_path, before="import pyarrow")
    assert "pyarrow" in out["loaded"]
    assert out["chdb_arrow"] is True


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
def test_a_serving_gateway_stores_pages_and_events_without_numpy_in_its_process(tmp_path: Path) -> None:
    """The whole path: migrations on a fresh data directory, pages, /collect, the inserts, receipts."""
    from loadtests.servers import (
        Server,
        collect_headers,
        consent_cookie,
        event_body,
        flush_barrier,
        page_headers,
        request,
    )
    from loadtests.stored import VISITS, count_in_subprocess

    with Server("gateway", tmp_path / "gateway") as server:
        cookie = consent_cookie(server.port)
        for _ in range(3):
            status, _, body = request(server.port, "GET", "/", headers=page_headers(cookie))
            assert status == 200 and b'id="cg-root"' in body
        status, _, _ = request(server.port, "POST", "/_consent/collect", event_body("numpy-check", 5),
                               collect_headers(server.port, cookie))
        assert status == 202
        flush_barrier(server.port, cookie)
        status, _, body = request(server.port, "GET", "/_consent/receipts", headers={"Cookie": f"cg_consent={cookie}"})
        assert status == 200
        maps = Path(f"/proc/{server.pid}/maps").read_text()
    stored = count_in_subprocess(server.data_dir, ["numpy-check"])
    assert stored["numpy-check"] == 5 and stored[VISITS] >= 3
    assert "chdb" in maps  # the embedded engine is in this process
    loaded = sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "numpy" in line or "quadmath" in line})
    assert loaded == []
