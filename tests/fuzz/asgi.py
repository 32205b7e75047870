"""The in-process driver the fuzz and privacy tests import from here; it lives in ``tests/support/driver.py``."""

from __future__ import annotations

from ..support.driver import Driver, Header, Reply

__all__ = ["Driver", "Header", "Reply"]
