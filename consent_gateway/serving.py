"""The note a serving command leaves in its data directory: which process holds the embedded engine.

`stats` reads it when the engine refuses to open, to say which URL to ask instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .settings import Settings

SERVING_FILE = "serving.json"


def mark_serving(settings: Settings, who: str, analytics_url: str | None) -> Path | None:
    """Note in the data directory which process holds its embedded engine and where it serves analytics."""
    if not settings.embedded:
        return None
    path = settings.data_dir / SERVING_FILE
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "who": who, "analytics_url": analytics_url}), encoding="utf-8")
    except OSError:
        return None  # a read-only data directory fails later with its own message
    return path


def unmark_serving(path: Path | None) -> None:
    if path is None:
        return
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def serving_process(data_dir: Path) -> dict[str, Any] | None:
    """What the serving command that holds ``data_dir`` noted about itself, if it still runs.

    A stopped server may leave its note behind (a signal ends uvicorn before any clean-up), so
    the note is read only after the engine refused to open, and only for a process still alive."""
    try:
        noted = json.loads((data_dir / SERVING_FILE).read_text(encoding="utf-8"))
        pid = int(noted["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it stopped without tidying up
    except PermissionError:
        pass  # alive, run by another user
    return dict(noted)
