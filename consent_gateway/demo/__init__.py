"""Demo website ("팔레트", an art-academy manager) that the consent gateway wraps."""

from __future__ import annotations

from consent_gateway.demo.site import create_demo_app

__all__ = ["create_demo_app"]
