"""The privacy suite drives whole gateways in-process, like the hostile-input suite."""

from __future__ import annotations

from ..fuzz.conftest import make_gateway

__all__ = ["make_gateway"]
