"""Where the browser files (banner, tracker, dashboard) live: in the installed package or the checkout."""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    """The folder of banner.js, tracker.js and the dashboard files.

    An installed wheel (or an editable install) maps the checkout's top-level ``static/`` to the
    ``consent_gateway.static`` package; a bare checkout on ``sys.path`` falls back to ``static/``.
    """
    try:
        # The package exists only as installed (mapped from ``static/``), so mypy cannot find it in a checkout.
        import consent_gateway.static as pkg  # type: ignore[import-not-found]

        for candidate in getattr(pkg, "__path__", []):
            if (Path(candidate) / "banner.js").exists():
                return Path(candidate)
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent / "static"
