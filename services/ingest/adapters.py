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
from services.common.failures import BadMessage, TransientError
from services.common.rollups import frame_rollups
from services.ingest.logic import FrameRow
from services.ingest.pgarrays import Float8s, Int8s, Texts
from services.ingest.retention import DAY_NS, day_of, ensure_days

_INSERT_FRAMES = """
WITH ins AS (
    INSERT INTO live_frames
        (stream_id, seq, t_first_ns, t_last_ns, n_samples, n_sensors, payload)
    SELECT * FROM unnest(
        %b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::int[], %b::int[], %b::bytea[])
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

# %b: arrays go over in PostgreSQL's binary format (no text to write and parse per number)
_ROLLUP_ARGS = (
    "%b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::bigint[], %b::int[], %b::int[], "
    "%b::int[], %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::bigint[]"
)
_UPSERT_ROLLUP = """
{name} AS (
    INSERT INTO {table} AS r
        (stream_id, sensor_id, bucket, n, n_bad, n_values, min, max, sum, last, last_ns)
    SELECT u.stream_id, u.sensor_id, to_timestamp(u.bucket / 1e9), sum(u.n), sum(u.n_bad),
           sum(u.n_values), min(u.lo), max(u.hi), sum(u.total),
           (array_agg(u.last ORDER BY u.last_ns DESC))[1], max(u.last_ns)
    FROM (SELECT *, bucket_ns - ((bucket_ns %% {width}) + {width}) %% {width} AS bucket FROM u) AS u
    JOIN ins ON ins.stream_id = u.stream_id AND ins.seq = u.seq
            AND ins.t_first_ns = u.t_first_ns
    GROUP BY u.stream_id, u.sensor_id, u.bucket
    ORDER BY u.stream_id, u.sensor_id, u.bucket  -- one lock order for every writer
    ON CONFLICT (stream_id, sensor_id, bucket) DO UPDATE SET
        n = r.n + EXCLUDED.n,
        n_bad = r.n_bad + EXCLUDED.n_bad,
        n_values = r.n_values + EXCLUDED.n_values,
        min = least(r.min, EXCLUDED.min),
        max = greatest(r.max, EXCLUDED.max),
        sum = r.sum + EXCLUDED.sum,
        last = CASE WHEN EXCLUDED.last_ns >= r.last_ns THEN EXCLUDED.last ELSE r.last END,
        last_ns = greatest(r.last_ns, EXCLUDED.last_ns)
)"""
ROLLUP_TABLES = (("live_rollup_1s", 1_000_000_000), ("live_rollup_1m", 60_000_000_000))
# The frames and, for those newly stored, their 1 s rollups per frame (``u``), merged into both
# rollup tables: one statement, one round trip.
_ROLLUP_INPUT = f"""
), u AS (
    SELECT stream_id, seq, t_first_ns, sensor_id, bucket_ns, n, n_bad, n_values,
           nullif(lo, 'NaN') AS lo, nullif(hi, 'NaN') AS hi, total,
           nullif(last, 'NaN') AS last, last_ns
    FROM unnest({_ROLLUP_ARGS})
        AS u(stream_id, seq, t_first_ns, sensor_id, bucket_ns, n, n_bad, n_values, lo, hi,
             total, last, last_ns)
), {
    ", ".join(
        _UPSERT_ROLLUP.format(name=f"r{i}", table=t, width=w).strip()
        for i, (t, w) in enumerate(ROLLUP_TABLES)
    )
}, stats AS ("""  # noqa: S608 (constants)
_INSERT_FRAMES_AND_ROLLUPS = _INSERT_FRAMES.replace(
    "RETURNING stream_id, seq, n_samples, t_last_ns",
    "RETURNING stream_id, seq, n_samples, t_last_ns, t_first_ns",
).replace("\n), stats AS (", _ROLLUP_INPUT)

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
                sql = _INSERT_FRAMES
                if frames:
                    params += await self._rollup_params(conn, frames)
                    sql = _INSERT_FRAMES_AND_ROLLUPS
                async with conn.transaction():
                    cur = await conn.execute(sql.encode(), params)
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

    async def _rollup_params(
        self, conn: psycopg.AsyncConnection, frames: list[Frame]
    ) -> tuple[Any, ...]:
        """The 1 s rollups of ``frames`` per frame, keyed by frame, as statement parameters
        (the statement keeps those of frames newly stored and folds them into minutes too)."""
        first: dict[tuple[str, int, int], Frame] = {}
        for f in frames:  # a frame twice in a batch is stored once, so counted once
            first.setdefault((f.stream_id, f.seq, f.first_ns()), f)
        keys = list(first)
        r = frame_rollups(list(first.values()), ROLLUP_TABLES[0][1])
        for table, width in ROLLUP_TABLES:
            await self._partitions(conn, table, np.unique(r.bucket_ns // width * width))
        seqs = np.array([k[1] for k in keys], dtype=np.int64)
        firsts = np.array([k[2] for k in keys], dtype=np.int64)
        return (
            Texts(r.stream_id), Int8s(seqs[r.frame]), Int8s(firsts[r.frame]), Texts(r.sensor_id),
            Int8s(r.bucket_ns), Int8s(r.n), Int8s(r.n_bad), Int8s(r.n_values), Float8s(r.min),
            Float8s(r.max), Float8s(r.sum), Float8s(r.last), Int8s(r.last_ns),
        )  # fmt: skip

    async def upsert_streams(self, records: list[StreamRegistered]) -> None:
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
