"""Secret keys: generation, and the local key file the demo and first runs use."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def new_secret() -> str:
    """A fresh 256-bit key, URL-safe text."""
    return secrets.token_urlsafe(32)


def local_keys(keys_dir: Path) -> tuple[tuple[str, ...], str]:
    """Signing keys and the pseudonymisation key from ``keys_dir/secrets.json``, made on first use.

    For the demo and local development only: production passes keys in the settings or the
    environment, so that every replica shares them.
    """
    path = keys_dir / "secrets.json"
    try:
        data = json.loads(path.read_text("utf-8"))
        return tuple(data["secret_keys"]), str(data["pseudonym_key"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"secret_keys": [new_secret()], "pseudonym_key": new_secret()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return tuple(data["secret_keys"]), data["pseudonym_key"]
