"""Gzipped size of the banner and tracker next to the consent banners they replace.

Run: ``.venv/bin/python benchmarks/asset_size.py [--install]``. Every file is compressed here, in
this run, with gzip level 9 (what ``Content-Encoding: gzip`` serves). The anchors,
vanilla-cookieconsent v3 (JS + CSS) and Klaro (``klaro.js``, CSS included), are measured in the same
run from their npm packages in ``~/.cache/consent-gateway-bench`` (``--install`` fetches them with
npm; nothing lands in the repository); without them the published figures are used and the output
says so.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"
CACHE = Path(os.environ.get("CONSENT_GATEWAY_BENCH_DIR", Path.home() / ".cache" / "consent-gateway-bench"))
BANNER_BUDGET = 8000  # 8 kB
TRACKER_BUDGET = 1500  # 1.5 kB
# name -> (npm spec, files inside node_modules, published gzipped bytes)
ANCHORS = {
    "vanilla-cookieconsent v3": (
        "vanilla-cookieconsent@3",
        ("vanilla-cookieconsent/dist/cookieconsent.umd.js", "vanilla-cookieconsent/dist/cookieconsent.css"),
        15_400,
    ),
    "Klaro": ("klaro@0", ("klaro/dist/klaro.js",), 68_900),
}


def gzipped(path: Path) -> int:
    """Bytes of ``path`` after gzip level 9."""
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def sizes() -> dict[str, tuple[int, int]]:
    """Raw and gzipped bytes of each browser file."""
    names = ("banner.js", "banner.css", "tracker.js")
    return {name: (len((STATIC / name).read_bytes()), gzipped(STATIC / name)) for name in names}


def install_anchors() -> None:
    """Fetch the anchor packages with npm into the cache directory (outside the repository)."""
    npm = shutil.which("npm")
    if npm is None:
        print("npm is not installed; using the published sizes", file=sys.stderr)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    specs = [spec for spec, _, _ in ANCHORS.values()]
    subprocess.run(  # noqa: S603 - fixed arguments
        [npm, "install", "--prefix", str(CACHE), *specs, "--no-audit", "--no-fund", "--silent"], check=False
    )


def anchor_sizes() -> dict[str, tuple[int, str]]:
    """Gzipped bytes of each anchor, measured now when its files are present, else published."""
    out = {}
    for name, (_spec, files, published) in ANCHORS.items():
        paths = [CACHE / "node_modules" / f for f in files]
        if all(p.is_file() for p in paths):
            out[name] = (sum(gzipped(p) for p in paths), "measured now")
        else:
            out[name] = (published, "published figure")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the table and the ratios; exit 1 when a budget is exceeded."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="fetch the anchor packages with npm first")
    args = parser.parse_args(argv)
    if args.install:
        install_anchors()
    table = sizes()
    for name, (raw, gz) in table.items():
        print(f"{name:<12} {raw:>7} B raw {gz:>7} B gzip")
    banner = table["banner.js"][1] + table["banner.css"][1]
    tracker = table["tracker.js"][1]
    print(f"banner.js + banner.css: {banner} B gzip ({banner / 1000:.2f} kB; budget {BANNER_BUDGET} B)")
    for anchor, (size, source) in anchor_sizes().items():
        ratio = banner / size
        print(f"  vs {anchor} {size / 1000:.1f} kB ({source}): ratio {ratio:.2f} ({1 / ratio:.1f}x smaller)")
    print(f"tracker.js: {tracker} B gzip (budget {TRACKER_BUDGET} B)")
    ok = banner <= BANNER_BUDGET and tracker <= TRACKER_BUDGET
    if not ok:
        print("over budget", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
