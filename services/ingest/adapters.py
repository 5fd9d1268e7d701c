"""Ingest's outside systems: PostgreSQL (frames, stream registry) and the InfluxDB sink."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Protocol

import psycopg
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from psycopg_pool import AsyncConnectionPool

from schemas.messages import StreamRegistered
from services.common.consumer import BadMessage, TransientError
from services.ingest.logic import FrameRow
from services.ingest.retention import day_of, ensure_days

_INSERT_FRAMES = """
WITH ins AS (
    INSERT INTO live_frames
        (stream_id, seq, t_first_ns, t_last_ns, n_samples, n_sensors, payload)
    SELECT * FROM unnest(
        %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[], %s::int[], %s::bytea[])
    ON CONFLICT (stream_id, seq, t_first_ns) DO NOTHING
    RETURNING stream_id, seq, n_samples, t_last_ns
), agg AS (
    SELECT stream_id, count(*) AS frames, sum(n_samples) AS samples,
           max(seq) AS last_seq, max(t_last_ns) AS last_ns
    FROM ins GROUP BY stream_id
), stats AS (
    INSERT INTO live_stream_stats AS s (stream_id, frames, samples, last_seq, last_sample_ns)
    SELECT stream_id, frames, samples, last_seq, last_ns FROM agg
    ON CONFLICT (stream_id) DO UPDATE SET
        frames = s.frames + EXCLUDED.frames,
        samples = s.samples + EXCLUDED.samples,
        last_seq = greatest(s.last_seq, EXCLUDED.last_seq),
        last_sample_ns = greatest(s.last_sample_ns, EXCLUDED.last_sample_ns),
        updated_at = now()
)
SELECT coalesce(sum(samples), 0) FROM agg
"""

_UPSERT_STREAM = """
INSERT INTO live_streams (stream_id, device_name, description, sensors, registered_at, updated_at)
VALUES (%s, %s, %s, %s::jsonb, %s, now())
ON CONFLICT (stream_id) DO UPDATE SET
    device_name = EXCLUDED.device_name, description = EXCLUDED.description,
    sensors = EXCLUDED.sensors, updated_at = now()
WHERE live_streams.registered_at <= EXCLUDED.registered_at
"""


class FrameStore(Protocol):
    async def write(self, rows: list[FrameRow]) -> int:
        """Store rows idempotently; returns the samples newly stored."""
        ...

    async def upsert_streams(self, records: list[StreamRegistered]) -> None: ...


class PgFrameStore:
    """Frames and registrations in PostgreSQL, one transaction per batch."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.days: set[date] = set()  # days whose raw partition is known to exist

    async def write(self, rows: list[FrameRow]) -> int:
        params = (
            [r.stream_id for r in rows],
            [r.seq for r in rows],
            [r.t_first_ns for r in rows],
            [r.t_last_ns for r in rows],
            [r.n_samples for r in rows],
            [r.n_sensors for r in rows],
            [r.payload for r in rows],
        )
        try:
            async with self.pool.connection() as conn:
                new_days = {day_of(r.t_first_ns) for r in rows} - self.days
                if new_days:
                    await ensure_days(conn, new_days)
                    self.days |= new_days
                async with conn.transaction():
                    cur = await conn.execute(_INSERT_FRAMES, params)
                    row = await cur.fetchone()
        except psycopg.errors.CheckViolation as exc:
            # a day's partition went (retention, another replica) since it was created here
            self.days.clear()
            raise TransientError(f"PostgreSQL: {exc}") from exc
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            raise TransientError(f"PostgreSQL: {exc}") from exc
        except psycopg.errors.DeadlockDetected as exc:
            raise TransientError(f"PostgreSQL deadlock: {exc}") from exc
        except TimeoutError as exc:
            raise TransientError("PostgreSQL pool timed out") from exc
        return int(row[0]) if row else 0

    async def upsert_streams(self, records: list[StreamRegistered]) -> None:
        try:
            async with self.pool.connection() as conn, conn.transaction():
                for r in records:
                    await conn.execute(
                        _UPSERT_STREAM,
                        (
                            r.stream_id,
                            r.device_name,
                            r.description,
                            json.dumps([s.model_dump() for s in r.sensors]),
                            r.registered_at,
                        ),
                    )
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise TransientError(f"PostgreSQL: {exc}") from exc


class LineSink(Protocol):
    async def write(self, lines: bytes) -> None: ...

    def close(self) -> None: ...


class InfluxSink:
    """Writes line protocol with influxdb-client (``/api/v2/write``)."""

    def __init__(self, url: str, token: str, org: str, bucket: str) -> None:
        self.bucket = bucket
        self.org = org
        # retries are ours (nak with delay), so a failing sink never stalls inside a write
        self.client = InfluxDBClient(
            url=url, token=token or "none", org=org, timeout=10_000, retries=False
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    async def write(self, lines: bytes) -> None:
        if not lines:
            return
        try:
            await asyncio.to_thread(
                self.api.write,
                bucket=self.bucket,
                org=self.org,
                record=lines,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status in (400, 413, 422):  # the lines themselves are refused: poison
                why = f"InfluxDB refused them ({exc.status}): {exc.body}"
                raise BadMessage("lines", why) from exc
            raise TransientError(f"InfluxDB write failed: {exc.status} {exc.reason}") from exc
        except Exception as exc:  # influxdb-client raises urllib3 and OS errors alike
            raise TransientError(f"InfluxDB write failed: {exc}") from exc

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
