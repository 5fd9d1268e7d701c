"""Ingest's outside systems: PostgreSQL (frames, stream registry) and the InfluxDB sink."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any, Protocol

import numpy as np
import psycopg
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from psycopg_pool import AsyncConnectionPool

from schemas.frames import Frame
from schemas.messages import StreamRegistered
from services.common.consumer import BadMessage, TransientError
from services.common.rollups import rollups, samples_of
from services.ingest.logic import FrameRow
from services.ingest.retention import DAY_NS, day_of, ensure_days

_INSERT_FRAMES = """
WITH ins AS (
    INSERT INTO live_frames
        (stream_id, seq, t_first_ns, t_last_ns, n_samples, n_sensors, payload)
    SELECT * FROM unnest(
        %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[], %s::int[], %s::bytea[])
    ON CONFLICT (stream_id, seq, t_first_ns) DO NOTHING
    RETURNING stream_id, seq, n_samples, t_last_ns
), new AS (
    SELECT stream_id, seq FROM ins
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
SELECT (SELECT coalesce(sum(samples), 0) FROM agg),
       (SELECT coalesce(array_agg(stream_id), '{}') FROM new),
       (SELECT coalesce(array_agg(seq), '{}') FROM new)
"""

_UPSERT_ROLLUP = """
INSERT INTO {table} AS r
    (stream_id, sensor_id, bucket, n, n_bad, n_values, min, max, sum, last, last_ns)
SELECT stream_id, sensor_id, to_timestamp(bucket_ns / 1e9), n, n_bad, n_values,
       nullif(lo, 'NaN'), nullif(hi, 'NaN'), total, nullif(last, 'NaN'), last_ns
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::int[], %s::int[], %s::int[],
            %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[])
    AS u(stream_id, sensor_id, bucket_ns, n, n_bad, n_values, lo, hi, total, last, last_ns)
ORDER BY stream_id, sensor_id, bucket_ns  -- one lock order for every writer
ON CONFLICT (stream_id, sensor_id, bucket) DO UPDATE SET
    n = r.n + EXCLUDED.n,
    n_bad = r.n_bad + EXCLUDED.n_bad,
    n_values = r.n_values + EXCLUDED.n_values,
    min = least(r.min, EXCLUDED.min),
    max = greatest(r.max, EXCLUDED.max),
    sum = r.sum + EXCLUDED.sum,
    last = CASE WHEN EXCLUDED.last_ns >= r.last_ns THEN EXCLUDED.last ELSE r.last END,
    last_ns = greatest(r.last_ns, EXCLUDED.last_ns)
"""
ROLLUP_TABLES = (("live_rollup_1s", 1_000_000_000), ("live_rollup_1m", 60_000_000_000))

_UPSERT_STREAM = """
INSERT INTO live_streams (stream_id, device_name, description, sensors, registered_at, updated_at)
VALUES (%s, %s, %s, %s::jsonb, %s, now())
ON CONFLICT (stream_id) DO UPDATE SET
    device_name = EXCLUDED.device_name, description = EXCLUDED.description,
    sensors = EXCLUDED.sensors, updated_at = now()
WHERE live_streams.registered_at <= EXCLUDED.registered_at
"""


class FrameStore(Protocol):
    async def write(self, rows: list[FrameRow], frames: list[Frame] | None = None) -> int:
        """Store rows idempotently, and the rollups of the ``frames`` (the same, decoded) that
        were new, in one transaction; returns the samples newly stored."""
        ...

    async def upsert_streams(self, records: list[StreamRegistered]) -> None: ...


class PgFrameStore:
    """Frames and registrations in PostgreSQL, one transaction per batch."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.days: dict[str, set[date]] = {}  # table -> days whose partition exists

    async def _partitions(self, conn: psycopg.AsyncConnection, table: str, t_ns: Any) -> None:
        first = np.unique(np.asarray(t_ns, dtype=np.int64) // DAY_NS) * DAY_NS
        days = {day_of(int(t)) for t in first}
        known = self.days.setdefault(table, set())
        if days - known:
            await ensure_days(conn, table, days - known)
            known |= days

    async def write(self, rows: list[FrameRow], frames: list[Frame] | None = None) -> int:
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
                await self._partitions(conn, "live_frames", params[2])
                async with conn.transaction():
                    cur = await conn.execute(_INSERT_FRAMES, params)
                    row = await cur.fetchone()
                    if row and frames and row[1]:
                        new = set(zip(row[1], row[2], strict=True))
                        # each new frame once, even when a batch holds it twice
                        fresh: dict[tuple[str, int], Frame] = {}
                        for f in frames:
                            if (f.stream_id, f.seq) in new:
                                fresh.setdefault((f.stream_id, f.seq), f)
                        await self._rollups(conn, list(fresh.values()))
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

    async def _rollups(self, conn: psycopg.AsyncConnection, frames: list[Frame]) -> None:
        """1 s and 1 min rollups of ``frames``, merged into the stored buckets."""
        samples = samples_of(frames)
        for table, bucket_ns in ROLLUP_TABLES:
            r = rollups(samples, bucket_ns)
            if not len(r):
                continue
            await self._partitions(conn, table, r.bucket_ns)
            await conn.execute(
                _UPSERT_ROLLUP.format(table=table).encode(),
                (
                    r.stream_id, r.sensor_id, r.bucket_ns.tolist(), r.n.tolist(),
                    r.n_bad.tolist(), r.n_values.tolist(), r.min.tolist(), r.max.tolist(),
                    r.sum.tolist(), r.last.tolist(), r.last_ns.tolist(),
                ),
            )  # fmt: skip

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
