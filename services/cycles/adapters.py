"""The cycles service's outside systems: KV state and config, JetStream (frames, events),
the object store of recordings, and PostgreSQL's ``live_cycles``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from psycopg_pool import AsyncConnectionPool

from schemas import subjects
from schemas.frames import Frame, pack
from schemas.messages import CycleConfig, CycleStateChanged, CycleStateRecord
from services.common.failures import TransientError
from services.common.records import config_or_default
from services.common.streams import read_frames

log = logging.getLogger(__name__)


class StateConflict(TransientError):
    """The stream's state in KV was written by someone else since this replica read it."""


class StateStore:
    """Cycle state per stream in KV, updated with compare-and-set.

    The partition holder is the only writer of its streams' state, so the state it applied last
    is kept in memory and not read back for every frame: it is read from KV when a partition is
    taken over (:meth:`forget_partition`), after a refused write, and for a stream not seen yet.
    A state applied but not written yet is *staged* (:meth:`stage`): the engine writes it at most
    about once a second (:meth:`due`) and acknowledges its frames only then, so a process that
    dies leaves them to be applied again from the state KV holds.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._known: dict[str, tuple[CycleStateRecord, int | None]] = {}
        self._staged_since: dict[str, float] = {}  # stream -> when its first unsaved change came

    async def load(self, stream_id: str) -> tuple[CycleStateRecord, int | None]:
        """The stream's state as last applied here, and the KV revision it was last written at."""
        known = self._known.get(stream_id)
        if known is not None:
            return known
        try:
            entry = await self.kv.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            return CycleStateRecord(stream_id=stream_id), None
        return CycleStateRecord.model_validate_json(entry.value or b"{}"), entry.revision

    def stage(self, record: CycleStateRecord, revision: int | None) -> None:
        """Keep ``record`` as the stream's state, to be written later."""
        self._known[record.stream_id] = (record, revision)
        self._staged_since.setdefault(record.stream_id, time.monotonic())

    def due(self, every_s: float) -> list[str]:
        """Streams whose staged state has waited ``every_s`` or more (the oldest first: a
        stream is staged in time order, and leaves when written)."""
        now = time.monotonic()
        out = []
        for sid, since in self._staged_since.items():
            if now - since < every_s:
                break
            out.append(sid)
        return out

    def staged(self, stream_id: str) -> bool:
        return stream_id in self._staged_since

    async def save(self, record: CycleStateRecord, revision: int | None) -> int:
        body = record.model_dump_json().encode()
        try:
            if revision is None:
                written = int(await self.kv.create(record.stream_id, body))
            else:
                written = int(await self.kv.update(record.stream_id, body, last=revision))
        except KeyWrongLastSequenceError as exc:
            self.forget_stream(record.stream_id)
            raise StateConflict(f"cycle state of {record.stream_id} changed meanwhile") from exc
        self._known[record.stream_id] = (record, written)
        self._staged_since.pop(record.stream_id, None)
        return written

    def restore(self, stream_id: str, known: tuple[CycleStateRecord, int | None]) -> None:
        """Put back the state as it was before a handler that failed part-way."""
        self._known[stream_id] = known

    def forget_stream(self, stream_id: str) -> None:
        """Read the stream's state from KV again next time."""
        self._known.pop(stream_id, None)
        self._staged_since.pop(stream_id, None)

    def forget_partition(self, partition: int) -> None:
        """Read the state of a partition's streams from KV again (taken over from another
        replica, which may have written them meanwhile)."""
        for sid in [s for s in self._known if subjects.partition_of(s) == partition]:
            self.forget_stream(sid)

    async def streams(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except nats.js.errors.NoKeysError:
            return []


class ConfigStore:
    """Per-stream :class:`CycleConfig` in KV (manual triggering when none is set), read again
    at most every ``ttl_s`` seconds: a changed configuration applies within that.

    With ``read_all`` (every key's current value in one request), the configurations of all
    streams are read together, once per ``ttl_s``, instead of one request per stream; should
    that request fail, the stream's key is read alone, as without it.
    """

    def __init__(
        self,
        kv: KeyValue,
        ttl_s: float = 1.0,
        read_all: Callable[[], Awaitable[dict[str, bytes]]] | None = None,
    ) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.read_all = read_all
        self._read: dict[str, tuple[float, CycleConfig]] = {}
        self._raw: dict[str, bytes] = {}  # what each config was parsed from (parsed once)
        self._all_read_at = -float("inf")
        self._reading = asyncio.Lock()

    def trigger_sensors(self, stream_id: str) -> tuple[str, ...] | None:
        """The sensors a stream's frames must be decoded for (the trigger signal, or none at all
        for manual triggering); None for a stream whose configuration was not read yet."""
        read = self._read.get(stream_id)
        if read is None:
            return None
        config = read[1]
        return (
            (config.signal_sensor,) if config.trigger == "signal" and config.signal_sensor else ()
        )

    async def put(self, stream_id: str, config: CycleConfig) -> None:
        """Keep the stream's configuration (this replica applies it at once, others within
        ``ttl_s``)."""
        raw = config.model_dump_json().encode()
        await self.kv.put(stream_id, raw)
        self._raw[stream_id] = raw
        self._read[stream_id] = (time.monotonic(), config)

    async def get(self, stream_id: str) -> CycleConfig:
        read = self._read.get(stream_id)
        if read is not None and time.monotonic() - read[0] < self.ttl_s:
            return read[1]
        if self.read_all is not None and await self._refresh_all():
            read = self._read.get(stream_id)
            if read is None:  # not in the bucket: manual triggering
                read = (self._all_read_at, CycleConfig())
                self._read[stream_id] = read
            return read[1]
        try:
            entry = await self.kv.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            config = CycleConfig()
        else:
            config = config_or_default(stream_id, entry.value)
        self._read[stream_id] = (time.monotonic(), config)
        return config

    async def _refresh_all(self) -> bool:
        """Read every stream's configuration, unless another caller just did; False when the
        bucket could not be read this way."""
        assert self.read_all is not None
        async with self._reading:
            if time.monotonic() - self._all_read_at < self.ttl_s:
                return True
            try:
                values = await self.read_all()
            except Exception as exc:  # the per-key read says what is wrong, or retries
                log.debug("reading every cycle configuration failed", extra={"error": str(exc)})
                return False
            now = time.monotonic()
            for key in [k for k in self._read if k not in values]:  # deleted: manual again
                self._raw.pop(key, None)
                self._read[key] = (now, CycleConfig())
            for key, value in values.items():
                held = self._read.get(key)
                if held is None or self._raw.get(key) != value:
                    self._raw[key] = value
                    self._read[key] = (now, config_or_default(key, value))
                else:
                    self._read[key] = (now, held[1])
            self._all_read_at = now
            return True


class FrameReader:
    """Reads a stream's frames back from JetStream by stream sequence."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    async def last_seq(self) -> int:
        """The newest sequence number in the samples stream."""
        info = await self.js.stream_info(subjects.SAMPLES.name)
        return int(info.state.last_seq)

    async def between(self, stream_id: str, first_js_seq: int, last_js_seq: int) -> list[Frame]:
        return await read_frames(self.nc, stream_id, from_seq=first_js_seq, to_seq=last_js_seq)


class Recordings:
    """Recorded cycles in the ``vertac_cycles`` object store, in the frame storage form."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def put(self, cycle_id: str, frame: Frame) -> str:
        await self.store.put(cycle_id, pack(frame))
        return cycle_id


class Events:
    """Cycle lifecycle events on the bus, de-duplicated by cycle id and event."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def publish(self, event: CycleStateChanged) -> None:
        name = {"running": "started", "completed": "completed", "aborted": "aborted"}[event.state]
        await self.js.publish(
            subjects.cycles(event.stream_id, name),
            event.model_dump_json().encode(),
            headers={
                subjects.HEADER_CONTENT_TYPE: "application/json",
                subjects.HEADER_MSG_ID: f"{event.cycle_id}:{name}",
            },
        )


_UPSERT = """
INSERT INTO live_cycles (cycle_id, stream_id, state, started_at, ended_at, duration_s, end_reason,
    samples, cycle_no, frames, gaps, late_frames, replayed_frames, completeness, recording,
    start_reason, updated_at)
VALUES (%(cycle_id)s, %(stream_id)s, %(state)s, %(started_at)s, %(ended_at)s, %(duration_s)s,
    %(end_reason)s, %(samples)s::jsonb, %(cycle_no)s, %(frames)s, %(gaps)s, %(late_frames)s,
    %(replayed_frames)s, %(completeness)s, %(recording)s, %(start_reason)s, now())
ON CONFLICT (cycle_id) DO UPDATE SET
    state = EXCLUDED.state, ended_at = EXCLUDED.ended_at, duration_s = EXCLUDED.duration_s,
    end_reason = EXCLUDED.end_reason, samples = EXCLUDED.samples, frames = EXCLUDED.frames,
    gaps = EXCLUDED.gaps, late_frames = EXCLUDED.late_frames,
    replayed_frames = EXCLUDED.replayed_frames, completeness = EXCLUDED.completeness,
    recording = EXCLUDED.recording, updated_at = now()
WHERE live_cycles.state = 'running'
"""


class CycleRows:
    """``live_cycles``: one row per cycle, written when it starts and when it ends."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def upsert(self, event: CycleStateChanged, start_reason: str = "") -> None:
        row = {
            "cycle_id": event.cycle_id,
            "stream_id": event.stream_id,
            "state": event.state,
            "started_at": event.started_at,
            "ended_at": event.ended_at,
            "duration_s": event.duration_s,
            "end_reason": event.reason if event.state != "running" else "",
            "samples": json.dumps(event.samples),
            "cycle_no": event.cycle_no,
            "frames": event.frames,
            "gaps": event.gaps,
            "late_frames": event.late_frames,
            "replayed_frames": event.replayed_frames,
            "completeness": event.completeness,
            "recording": event.recording,
            "start_reason": start_reason,
        }
        async with self.pool.connection() as conn:
            await conn.execute(_UPSERT, row)


__all__ = [
    "ConfigStore",
    "CycleRows",
    "Events",
    "FrameReader",
    "Recordings",
    "StateConflict",
    "StateStore",
]
