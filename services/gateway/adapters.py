"""The gateway's outside systems: the bus (publish, KV, subscriptions) and PostgreSQL reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from nats.js.api import PubAck
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue
from psycopg_pool import AsyncConnectionPool

from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, Frame, encode_binary
from schemas.messages import CycleCommand
from services.common.runtime import Bus


@dataclass(frozen=True, slots=True)
class Persisted:
    frames: int
    samples: int
    last_seq: int | None
    last_sample_at: datetime | None


class BusPort:
    """What the gateway does on the bus."""

    def __init__(
        self, bus: Bus, kv_streams: KeyValue, kv_seq: KeyValue, kv_state: KeyValue
    ) -> None:
        self.bus = bus
        self.kv_streams = kv_streams
        self.kv_seq = kv_seq
        self.kv_state = kv_state

    @classmethod
    async def open(cls, bus: Bus) -> BusPort:
        return cls(
            bus,
            await bus.js.key_value(subjects.KV_STREAMS),
            await bus.js.key_value(subjects.KV_SEQ),
            await bus.js.key_value(subjects.KV_CYCLE_STATE),
        )

    async def publish_frame(self, frame: Frame, msg_id: str) -> PubAck:
        return await self.bus.js.publish(
            subjects.samples(frame.stream_id),
            encode_binary(frame),
            headers={
                subjects.HEADER_CONTENT_TYPE: CONTENT_TYPE_BINARY,
                subjects.HEADER_MSG_ID: msg_id,
            },
            timeout=5,
        )

    async def publish_command(self, command: CycleCommand) -> PubAck:
        return await self.bus.js.publish(
            subjects.control(command.stream_id),
            command.model_dump_json().encode(),
            headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
            timeout=5,
        )

    async def cycle_state(self, stream_id: str) -> str:
        try:
            entry = await self.kv_state.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            return "idle"
        try:
            return str(json.loads(entry.value or b"{}").get("state", "idle"))
        except ValueError:
            return "unknown"

    async def stream_ids(self) -> list[str]:
        try:
            return sorted(await self.kv_streams.keys())
        except NoKeysError:
            return []

    async def healthy(self) -> str:
        if not self.bus.nc.is_connected:
            return "disconnected"
        try:
            await self.bus.js.account_info()
        except Exception as exc:  # any failure means the bus is not usable; report it
            return f"error: {exc}"
        return "ok"


class Database:
    """Read-only queries of the gateway."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def persisted(self, stream_id: str) -> Persisted:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT frames, samples, last_seq, last_sample_ns FROM live_stream_stats"
                " WHERE stream_id = %s",
                (stream_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return Persisted(0, 0, None, None)
        last = datetime.fromtimestamp(row[3] / 1e9, UTC) if row[3] is not None else None
        return Persisted(int(row[0]), int(row[1]), row[2], last)

    async def healthy(self) -> str:
        try:
            async with self.pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            return f"error: {exc}"
        return "ok"
