"""Gzipped size of the banner and tracker next to the banners they replace.

Run: ``.venv/bin/python benchmarks/asset_size.py``. The files are compressed here, in this run,
with gzip level 9 (what a CDN or ``Content-Encoding: gzip`` serves); the anchors are the published
gzipped sizes of vanilla-cookieconsent v3 (10.1 kB JS + 5.3 kB CSS) and Klaro (68.9 kB).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"
BANNER_BUDGET = 8000  # 8 kB
TRACKER_BUDGET = 1500  # 1.5 kB
ANCHORS = {"vanilla-cookieconsent v3": 15.4 * 1000, "Klaro": 68.9 * 1000}


def gzipped(path: Path) -> int:
    """Bytes of ``path`` after gzip level 9."""
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def sizes() -> dict[str, tuple[int, int]]:
    """Raw and gzipped bytes of each browser file."""
    return {
        name: (len((STATIC / name).read_bytes()), gzipped(STATIC / name))
        for name in ("banner.js", "banner.css", "tracker.js")
    }


def main() -> int:
    """Print the table and the ratios; exit 1 when a budget is exceeded."""
    table = sizes()
    for name, (raw, gz) in table.items():
        print(f"{name:<12} {raw:>7} B raw {gz:>7} B gzip")
    banner = table["banner.js"][1] + table["banner.css"][1]
    tracker = table["tracker.js"][1]
    print(f"banner.js + banner.css: {banner} B gzip ({banner / 1000:.2f} kB; budget {BANNER_BUDGET} B)")
    for anchor, size in ANCHORS.items():
        print(f"  vs {anchor} ({size / 1000:.1f} kB): {banner / size:.2f}x the size ({size / banner:.1f}x smaller)")
    print(f"tracker.js: {tracker} B gzip (budget {TRACKER_BUDGET} B)")
    ok = banner <= BANNER_BUDGET and tracker <= TRACKER_BUDGET
    if not ok:
        print("over budget", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
