"""The local append-only journal: what was acknowledged but is not yet in ClickHouse.

One directory per worker process (claimed with an exclusive ``flock`` on its ``LOCK`` file), holding
numbered segment files. Each entry is a frame ``<length u32><crc32 u32><JSON payload>``:

- ``G`` group: the rows of one group commit (already pseudonymised rows, never raw IPs, user
  agents or query strings: the writer builds rows through the policy before journaling). The
  payload is a JSON header line, then one JSONCompactEachRow line per row, exactly the bytes the
  insert sends to ClickHouse; the header names how many are events and receipts and each event
  row's erasure key.
- ``p`` plan: which groups one ClickHouse insert carries, and its deduplication token; written
  and fsynced before the insert, so a replay repeats exactly the same insert with the same token;
- ``c`` commit: that plan is in ClickHouse;
- ``t`` tombstone: a withdrawn visitor whose identified rows must not be replayed;
- ``d`` done: that tombstone's DELETE ran in ClickHouse.

A segment is deleted when everything in it and in every older segment is resolved, so a tombstone
always outlives the groups it filters. A torn frame (the process died mid-write, before the fsync
that would have acknowledged it) ends the reading of its segment.
"""

from __future__ import annotations

import builtins
import datetime as dt
import fcntl
import json
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..errors import ConsentGatewayError
from ..rows import IDENTIFIED, VISITOR, encode_line

logger = logging.getLogger("consent_gateway.pipeline")

_FRAME = struct.Struct("<II")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SUFFIX = ".seg"


class JournalError(ConsentGatewayError):
    """The journal directory cannot be used; the message names it and what to do."""


@dataclass(slots=True)
class Group:
    """Rows of one group commit, in arrival order, as encoded lines (``rows.encode_line``).

    ``keys[i]`` is the visitor of ``events[i]`` when that row is identified, else -1: erasure
    filters on it without decoding the rows.
    """

    seq: int
    events: list[bytes]
    keys: list[int]
    receipts: list[bytes]
    segment: int = -1
    replayed: bool = False
    waiters: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.events) + len(self.receipts)


@dataclass(slots=True)
class Plan:
    """One ClickHouse insert: a fixed list of groups and the deduplication token that names it."""

    seq: int
    groups: list[Group]
    token: str
    segment: int = -1

    @property
    def size(self) -> int:
        return sum(g.size for g in self.groups)


@dataclass(slots=True)
class Recovered:
    """What a journal held at open: unfinished plans first, then groups in no plan, in order."""

    plans: list[Plan] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    tombstones: dict[int, int] = field(default_factory=dict)  # seq -> visitor, DELETE not yet run
    erased_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(p.size for p in self.plans) + sum(g.size for g in self.groups)


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    size: int
    open_items: set[int] = field(default_factory=set)


def encode_rows(rows: list[list[Any]]) -> tuple[list[bytes], list[int]]:
    """Rows as Python values (UUID, UTC datetime, ...) to lines and erasure keys."""
    lines = []
    keys = []
    for row in rows:
        values = list(row)
        if isinstance(values[1], dt.datetime):
            values[1] = (values[1] - _EPOCH) / dt.timedelta(seconds=1)
        lines.append(encode_line(values))
        keys.append(int(row[VISITOR]) if len(row) > VISITOR and row[IDENTIFIED] == 1 else -1)
    return lines, keys


def erase_rows(group: Group, visitors: set[int] | frozenset[int]) -> int:
    """Remove identified event rows of ``visitors`` from ``group`` in place; returns how many went."""
    if not visitors or not group.events:
        return 0
    keys = group.keys
    if not any(k in visitors for k in keys):
        return 0
    kept = [(line, key) for line, key in zip(group.events, keys, strict=True) if key not in visitors]
    removed = len(keys) - len(kept)
    group.events[:] = [line for line, _ in kept]
    group.keys[:] = [key for _, key in kept]
    return removed


class Journal:
    """Append-only, fsynced on ``sync()``; owned by the writer thread (not thread-safe)."""

    # What is appended and synced survives a crash: a /collect request is acknowledged then.
    durable = True

    def __init__(self, directory: Path, lock_fd: int, *, segment_bytes: int) -> None:
        self.directory = directory
        self.name = directory.name
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._where: dict[int, int] = {}  # seq -> segment number, for unresolved entries
        self._seq = 0
        # Sequence numbers restart once every segment is released; tokens of new plans carry a
        # per-open nonce so ClickHouse never drops them as repeats of an earlier run's inserts.
        self._epoch = uuid.uuid4().hex[:8]
        self._fh: BinaryIO | None = None
        self._dirty = False
        self._last_number = 0
        self.bytes = 0

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r}, segments={len(self._segments)}, bytes={self.bytes})"

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, segment_bytes: int) -> tuple[Journal, Recovered]:
        """Claim a directory under ``root`` (an orphan first), adopt other orphans, read what is left."""
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {root}: {exc}; fix its permissions") from exc
        claimed: list[tuple[Path, int]] = []
        for candidate in sorted(p for p in root.iterdir() if p.is_dir()):
            fd = _try_lock(candidate)
            if fd is not None:
                claimed.append((candidate, fd))
        if not claimed:
            fresh = root / f"w-{uuid.uuid4().hex[:12]}"
            fresh.mkdir(mode=0o700)
            _fsync_dir(root)
            fd = _try_lock(fresh)
            if fd is None:  # pragma: no cover - a directory created a moment ago
                raise JournalError(f"cannot lock the new journal directory {fresh}")
            claimed.append((fresh, fd))
        # Keep the directory with the most history as ours, so its tokens stay stable.
        claimed.sort(key=lambda c: -len(list(c[0].glob("*" + _SUFFIX))))
        (directory, fd), orphans = claimed[0], claimed[1:]
        journal = cls(directory, fd, segment_bytes=segment_bytes)
        recovered = journal._load()
        for orphan_dir, orphan_fd in orphans:
            journal._adopt(orphan_dir, orphan_fd, recovered)
        if journal._fh is None:
            journal._new_segment()
        return journal, recovered

    def _load(self) -> Recovered:
        groups: dict[int, Group] = {}
        plans: dict[int, tuple[list[int], str, int]] = {}
        committed: set[int] = set()
        tombs: dict[int, int] = {}
        done: set[int] = set()
        for number, path in _segment_files(self.directory):
            seg = _Segment(number, path, path.stat().st_size)
            self._segments.append(seg)
            self._last_number = max(self._last_number, number)
            self.bytes += seg.size
            for entry, lines in _read_entries(path):
                seq = int(entry["n"])
                kind = entry["k"]
                self._seq = max(self._seq, seq)
                if kind == "G":
                    n_events = int(entry.get("e", 0))
                    keys = [int(k) for k in entry.get("v", ())]
                    groups[seq] = Group(seq, lines[:n_events], keys, lines[n_events:], number, replayed=True)
                elif kind == "p":
                    plans[seq] = ([int(g) for g in entry["g"]], str(entry["t"]), number)
                elif kind == "c":
                    committed.add(seq)
                elif kind == "t":
                    tombs[seq] = int(entry["v"])
                    self._where[seq] = number
                elif kind == "d":
                    done.add(seq)
        recovered = Recovered()
        erased = set(tombs.values())
        planned: set[int] = set()
        for seq, (members, token, number) in sorted(plans.items()):
            planned.update(members)
            if seq in committed:
                continue
            plan = Plan(seq, [groups[g] for g in members if g in groups], token, number)
            recovered.plans.append(plan)
            self._where[seq] = number
        for seq, group in groups.items():
            if seq not in planned:
                recovered.groups.append(group)
        for plan in recovered.plans:
            for g in plan.groups:
                self._where[g.seq] = g.segment
        for g in recovered.groups:
            self._where[g.seq] = g.segment
        for seq, visitor in tombs.items():
            if seq in done:
                self._where.pop(seq, None)
            else:
                recovered.tombstones[seq] = visitor
        for group in [g for p in recovered.plans for g in p.groups] + recovered.groups:
            recovered.erased_rows += erase_rows(group, erased)
        for seq, number in self._where.items():
            self._segment(number).open_items.add(seq)
        return recovered

    def _adopt(self, orphan: Path, fd: int, recovered: Recovered) -> None:
        """Copy an orphaned directory's unfinished work into this journal, then delete it."""
        other = Journal(orphan, fd, segment_bytes=self._segment_bytes)
        found = other._load()
        if self._fh is None:
            self._new_segment()
        for seq, visitor in found.tombstones.items():
            del seq
            recovered.tombstones[self.append_tombstone(visitor)] = visitor
        for plan in found.plans:
            members = [self.append_group(g.events, g.keys, g.receipts, replayed=True) for g in plan.groups]
            recovered.plans.append(self.append_plan(members, token=plan.token))
        for group in found.groups:
            recovered.groups.append(self.append_group(group.events, group.keys, group.receipts, replayed=True))
        recovered.erased_rows += found.erased_rows
        self.sync()
        for seg in other._segments:
            seg.path.unlink(missing_ok=True)
        (orphan / "LOCK").unlink(missing_ok=True)
        try:
            orphan.rmdir()
        except OSError:
            logger.warning("journal directory %s is not empty after adoption; left in place", orphan)
        os.close(fd)
        logger.info("adopted the orphaned journal %s", orphan)

    # -- appending ----------------------------------------------------------------------------

    def append_group(
        self, events: list[bytes], keys: list[int], receipts: list[bytes], *, replayed: bool = False
    ) -> Group:
        """Journal one group commit's encoded rows (``keys``: each event row's erasure key)."""
        if len(keys) != len(events):
            raise ValueError(f"{len(events)} event rows but {len(keys)} erasure keys")
        seq = self._next_seq()
        header = orjson.dumps({"k": "G", "n": seq, "e": len(events), "v": keys})
        self._write(b"\n".join([header, *events, *receipts]), seq, unresolved=True)
        return Group(seq, events, keys, receipts, self._active().number, replayed=replayed)

    def append_plan(self, groups: list[Group], *, token: str | None = None) -> Plan:
        seq = self._next_seq()
        token = token or f"{self.name}-{self._epoch}-{seq}"
        self._append({"k": "p", "g": [g.seq for g in groups], "t": token}, unresolved=True, seq=seq)
        return Plan(seq, groups, token, self._active().number)

    def append_commit(self, plan: Plan) -> None:
        self._append({"k": "c", "n": plan.seq}, unresolved=False, seq=plan.seq)
        for seq in [plan.seq, *(g.seq for g in plan.groups)]:
            self._resolve(seq)

    def append_tombstone(self, visitor: int) -> int:
        return self._append({"k": "t", "v": visitor}, unresolved=True)

    def append_done(self, tombstone: int) -> None:
        self._append({"k": "d", "n": tombstone}, unresolved=False, seq=tombstone)
        self._resolve(tombstone)

    def sync(self) -> None:
        """Make every appended entry durable (one fsync for the whole group commit)."""
        if self._fh is None or not self._dirty:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._dirty = False
        if self._active().size >= self._segment_bytes:
            self._new_segment()

    def release(self) -> int:
        """Delete the oldest segments whose entries are all resolved; returns how many went."""
        removed = 0
        while self._segments and not self._segments[0].open_items:
            seg = self._segments[0]
            if self._fh is not None and seg is self._segments[-1]:
                if seg.size == 0:
                    break
                # Everything ever written is resolved: start afresh instead of growing the file.
                self._new_segment()
            self._segments.pop(0)
            seg.path.unlink(missing_ok=True)
            self.bytes -= seg.size
            removed += 1
        return removed

    @property
    def unresolved(self) -> int:
        return len(self._where)

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None
        self.release()
        if self._segments and all(not s.open_items for s in self._segments):
            for seg in self._segments:
                seg.path.unlink(missing_ok=True)
                self.bytes -= seg.size
            self._segments.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- internals ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _append(self, entry: dict[str, Any], *, unresolved: bool, seq: int | None = None) -> int:
        if self._fh is None:
            raise JournalError(f"the journal {self.directory} is closed")
        if seq is None or entry.get("n") is None:
            seq = seq if seq is not None else self._next_seq()
            entry["n"] = seq
        payload = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._write(payload, seq, unresolved=unresolved)
        return seq

    def _write(self, payload: bytes, seq: int, *, unresolved: bool) -> None:
        if self._fh is None:
            raise JournalError(f"the journal {self.directory} is closed")
        self._fh.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
        written = _FRAME.size + len(payload)
        seg = self._active()
        seg.size += written
        self.bytes += written
        self._dirty = True
        if unresolved:
            seg.open_items.add(seq)
            self._where[seq] = seg.number

    def _resolve(self, seq: int) -> None:
        number = self._where.pop(seq, None)
        if number is not None:
            self._segment(number).open_items.discard(seq)

    def _active(self) -> _Segment:
        return self._segments[-1]

    def _segment(self, number: int) -> _Segment:
        for seg in self._segments:
            if seg.number == number:
                return seg
        raise KeyError(number)

    def _new_segment(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        self._last_number += 1
        number = self._last_number
        path = self.directory / f"{number:012d}{_SUFFIX}"
        # Owner-only, like the salts: identified rows carry keyed visitor hashes.
        self._fh = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        _fsync_dir(self.directory)
        self._segments.append(_Segment(number, path, 0))
        self._dirty = False


def _try_lock(directory: Path) -> int | None:
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for path in directory.glob("*" + _SUFFIX):
        try:
            out.append((int(path.stem), path))
        except ValueError:
            logger.warning("ignoring %s: not a journal segment name", path)
    return sorted(out)


def _read_entries(path: Path) -> Iterator[tuple[dict[str, Any], list[bytes]]]:
    """Each entry's JSON header and, for a ``G`` group, its row lines."""
    data = path.read_bytes()
    pos = 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            logger.warning("journal segment %s ends in a torn entry at byte %d (never acknowledged)", path, pos)
            return
        if payload.startswith(b'{"k":"G"'):
            header, _, rest = payload.partition(b"\n")
            yield json.loads(header), (rest.split(b"\n") if rest else [])
        else:
            yield json.loads(payload), []
        pos = start + length
    if pos < len(data):
        logger.warning("journal segment %s ends in a torn header at byte %d (never acknowledged)", path, pos)


class MemoryJournal:
    """The journal's interface without a disk (``journal_enabled = false``): numbers entries and
    names plans, keeps nothing. Nothing survives the process, so a ``/collect`` request is only
    acknowledged once its rows are in ClickHouse (``durable`` is False)."""

    durable = False
    bytes = 0

    def __init__(self) -> None:
        self._seq = 0
        self.name = f"m-{uuid.uuid4().hex[:12]}"

    def __repr__(self) -> str:
        return f"MemoryJournal({self.name!r})"

    def append_group(
        self, events: list[builtins.bytes], keys: list[int], receipts: list[builtins.bytes], *, replayed: bool = False
    ) -> Group:
        self._seq += 1
        return Group(self._seq, events, keys, receipts, replayed=replayed)

    def append_plan(self, groups: list[Group], *, token: str | None = None) -> Plan:
        self._seq += 1
        return Plan(self._seq, groups, token or f"{self.name}-{self._seq}")

    def append_commit(self, plan: Plan) -> None:
        pass

    def append_tombstone(self, visitor: int) -> int:
        self._seq += 1
        return self._seq

    def append_done(self, tombstone: int) -> None:
        pass

    def sync(self) -> None:
        pass

    def release(self) -> int:
        return 0

    def close(self) -> None:
        pass
