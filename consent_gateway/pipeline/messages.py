"""What travels from the request side to the writer thread, and how the writer answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..records import CollectedEvents


@dataclass(slots=True)
class Command:
    """An instruction that travels in order with the records."""

    kind: str  # "flush" | "erase" | "stop"
    arg: Any
    done: Callable[[Any], None] | None


@dataclass(slots=True)
class EventBatch:
    """The events of one ``/collect`` request; ``done(True)`` once they are durable."""

    events: CollectedEvents
    done: Callable[[Any], None]


def notify(waiters: list[Callable[[Any], None]], value: Any) -> None:
    """Answer waiters; those of one event loop are answered with a single wake-up of that loop."""
    if not waiters:
        return
    by_loop: dict[Any, list[Any]] = {}
    for done in waiters:
        loop = getattr(done, "loop", None)
        if loop is None:
            done(value)
        else:
            by_loop.setdefault(loop, []).append(done)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, group, value)
        except RuntimeError:  # that loop is closed; nobody is waiting there any more
            pass


def _settle(waiters: list[Any], value: Any) -> None:
    for waiter in waiters:
        waiter.settle(value)
