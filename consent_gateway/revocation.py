"""Revoked consent ids: a withdrawn or erased consent id is never honoured again.

The list is a file in the data directory (``revoked.txt``), appended under an exclusive ``flock``
and fsynced, so it survives restarts and every worker of the host shares it. Each worker keeps the
ids in a set and checks the file's size and mtime at most once per ``refresh_seconds``; the hot
path (every request with a consent cookie) is one set lookup and one float comparison.

An entry only needs to outlive the cookies it revokes: a cookie expires ``max_age`` after it was
issued, and it was issued before it was revoked, so entries older than ``max_age`` are dropped when
the file is compacted.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import RequestError

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _valid_id(consent_id: str) -> bool:
    return 16 <= len(consent_id) <= 64 and all(ch in _ID_CHARS for ch in consent_id)


class Revocations:
    """The host's list of revoked consent ids, shared by its workers through ``path``."""

    def __init__(
        self,
        path: Path,
        *,
        max_age: int,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_age = max_age
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._wall = wall_clock
        self._ids: set[str] = set()
        self._seen: tuple[int, int] | None = None  # (size, mtime_ns) of the file last read
        self._next_check = float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Revocations({str(self.path)!r}, revoked={len(self._ids)})"

    def __len__(self) -> int:
        return len(self._ids)

    def revoke(self, consent_id: str) -> None:
        """Revoke ``consent_id`` for good (durable before this returns); revoking twice is harmless."""
        if not _valid_id(consent_id):
            raise RequestError(
                f"consent id {consent_id[:80]!r} is not one the gateway issues (16-64 of A-Z a-z 0-9 - _); "
                "pass the id exactly as the receipt shows it",
                field="consent_id",
            )
        line = f"{consent_id} {int(self._wall())}\n".encode("ascii")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # compact() may have replaced the file while this call waited for the lock: an
                # append to the old file would be lost, so start again on the new one.
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = -1
                if os.fstat(fd).st_ino != current:
                    continue
                os.write(fd, line)
                os.fsync(fd)
                break
            finally:
                os.close(fd)  # closing releases the lock
        with self._lock:
            self._ids.add(consent_id)

    def is_revoked(self, consent_id: str) -> bool:
        """True when ``consent_id`` was revoked by any worker (seen within ``refresh_seconds``)."""
        if self._clock() >= self._next_check:
            self.refresh()
        return consent_id in self._ids

    def refresh(self) -> None:
        """Re-read the file when another worker (or a restart) changed it."""
        with self._lock:
            self._next_check = self._clock() + self.refresh_seconds
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return
            stamp = (st.st_size, st.st_mtime_ns)
            if stamp == self._seen:
                return
            self._ids |= {cid for cid, _ in self._read()}
            self._seen = stamp

    def compact(self) -> int:
        """Drop entries older than ``max_age`` (their cookies have expired); returns how many."""
        if not self.path.exists():
            return 0
        cutoff = self._wall() - self.max_age
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self._read()
            keep = [(cid, at) for cid, at in entries if at >= cutoff]
            if len(keep) == len(entries):
                return 0
            tmp = self.path.with_suffix(".tmp")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(out, "w", encoding="ascii") as fh:
                fh.writelines(f"{cid} {at}\n" for cid, at in keep)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(fd)
        with self._lock:
            self._ids = {cid for cid, _ in keep}
            self._seen = None
        return len(entries) - len(keep)

    def _read(self) -> list[tuple[str, int]]:
        try:
            text = self.path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            cid, _, at = line.partition(" ")
            # A torn last line (a crash mid-append) is skipped; the revoking call had not returned.
            if _valid_id(cid) and at.isdigit():
                out.append((cid, int(at)))
        return out
