"""The edge's durable store-and-forward buffer: SQLite in WAL mode, one row per frame.

A frame is committed here (``synchronous=FULL``) before anything is published, so it survives a
bus outage and a power loss of the edge (kill -9). Frames leave in ``seq`` order and are deleted
only after JetStream acknowledged them; a frame published twice (crash between ack and delete) is
dropped by JetStream's de-duplication (``Nats-Msg-Id`` = stream:seq).

The per-stream ``seq`` counter lives in the same database, so numbering continues across
restarts without the bus. When the buffer holds ``max_bytes``, new frames are refused and counted
(``refused``, visible in ``vertac edge status`` and in the status published on the bus): frames
already buffered are never dropped, and nothing is dropped silently.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.frames import Frame, encode_binary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (seq INTEGER PRIMARY KEY, stream_id TEXT NOT NULL,
    created_ns INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class BufferInUse(OSError):
    """Another agent holds the buffer file: two writers would number and delete frames of one
    another."""


class BufferFull(RuntimeError):
    """The buffer reached its size limit; the frame was refused (and counted)."""


@dataclass(frozen=True, slots=True)
class BufferStatus:
    depth: int
    bytes: int
    oldest_age_s: float | None
    next_seq: int
    refused: int
    published: int


class FrameBuffer:
    """A durable FIFO of encoded frames of one stream."""

    def __init__(
        self, path: Path, stream_id: str, max_bytes: int, *, exclusive: bool = False
    ) -> None:
        """``exclusive`` (an agent, which writes): hold the buffer's lock file, or raise
        :class:`BufferInUse`; readers (``vertac edge status``) open it beside the agent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: int | None = None
        if exclusive:
            self._lock = _hold(path)
        self.path = path
        self.stream_id = stream_id
        self.max_bytes = max_bytes
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT coalesce(sum(length(payload)), 0) FROM frames").fetchone()
        self._bytes = int(row[0])

    def _meta(self, key: str, default: int = 0) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _bump(self, key: str, by: int) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, by),
        )

    def next_seq(self) -> int:
        return self._meta("next_seq")

    def seed_seq(self, first: int) -> None:
        """Start numbering at ``first`` if this buffer never numbered a frame."""
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?)", (first,))

    def put(self, make: Callable[[int], Frame]) -> Frame:
        """Number a frame with the next ``seq`` and commit it, in one transaction."""
        if self._bytes >= self.max_bytes:
            self._bump("refused", 1)
            raise BufferFull(
                f"edge buffer {self.path} holds {self._bytes} bytes (limit {self.max_bytes})"
            )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("next_seq")
            frame = make(seq)
            payload = encode_binary(frame, shuffled=True)  # the storage form: stored as sent
            self.db.execute(
                "INSERT INTO frames (seq, stream_id, created_ns, payload) VALUES (?, ?, ?, ?)",
                (seq, frame.stream_id, time.time_ns(), payload),
            )
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('next_seq', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (seq + 1,),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._bytes += len(payload)
        return frame

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` frames as (seq, payload)."""
        return self.db.execute(
            "SELECT seq, payload FROM frames ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()

    def remove(self, seqs: list[int]) -> None:
        """Forget frames JetStream acknowledged."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        row = self.db.execute(
            f"SELECT coalesce(sum(length(payload)), 0) FROM frames WHERE seq IN ({marks})",  # noqa: S608
            seqs,
        ).fetchone()
        self.db.execute("BEGIN")
        self.db.execute(f"DELETE FROM frames WHERE seq IN ({marks})", seqs)  # noqa: S608
        self._bump("published", len(seqs))
        self.db.execute("COMMIT")
        self._bytes -= int(row[0])

    def status(self, now_ns: int | None = None) -> BufferStatus:
        now_ns = now_ns or time.time_ns()
        depth, oldest = self.db.execute("SELECT count(*), min(created_ns) FROM frames").fetchone()
        return BufferStatus(
            depth=int(depth),
            bytes=self._bytes,
            oldest_age_s=(now_ns - oldest) / 1e9 if oldest is not None else None,
            next_seq=self._meta("next_seq"),
            refused=self._meta("refused"),
            published=self._meta("published"),
        )

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with the descriptor
            self._lock = None


def _hold(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BufferInUse(
            f"edge buffer {path} is in use by another agent (pid {holder}): give each agent "
            "a buffer file of its own (buffer.path)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
