"""The analysis service's outside systems: recordings (object store), references and results
(PostgreSQL), the stream registry (KV) and the analysis subject."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, LiteralString

import nats.errors
import numpy as np
import numpy.typing as npt
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from psycopg_pool import AsyncConnectionPool

from edge.registry_client import lookup
from schemas import subjects
from schemas.frames import Frame, unpack
from schemas.messages import AnalysisCompleted
from schemas.timeutil import ns_of
from services.analysis.logic import sensor_deviations
from services.analysis.trend import Point
from services.common import directget
from services.common.failures import BadMessage, TransientError
from services.common.references import Reference, reference_from_bytes, reference_to_bytes

log = logging.getLogger(__name__)


class RecordingStore:
    """Cycle recordings, read with direct gets (no consumer per cycle)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def get(self, name: str) -> Frame:
        """A missing recording is poison (dead-lettered with the reason); a bus that does not
        answer is an outage (retried)."""
        try:
            data = await directget.read_object(self.nc, subjects.OBJ_CYCLES, name)
        except directget.ObjectMissing as exc:
            raise BadMessage("recording", str(exc)) from exc
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise TransientError(f"reading recording {name!r}: {exc!r}") from exc
        return unpack(data)


class Registry:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def sensors(self, stream_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """Sensor types and units of a registered stream (empty when unregistered)."""
        record = await lookup(self.kv, stream_id)
        if record is None:
            return {}, {}
        return {s.id: s.type for s in record.sensors}, {s.id: s.unit for s in record.sensors}

    async def names(self, stream_id: str) -> dict[str, str] | None:
        """Registered sensors of a stream, id -> name; None when it is not registered."""
        record = await lookup(self.kv, stream_id)
        if record is None:
            return None
        return {s.id: s.name for s in record.sensors}


class References:
    """Versioned references in ``live_references`` (one active per stream)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        # stream -> (row version, the active reference decoded): a reference is not rewritten,
        # so it is read and decoded once, not for every cycle
        self._decoded: dict[str, tuple[str, Reference]] = {}

    async def active(self, stream_id: str) -> Reference | None:
        cached = self._decoded.get(stream_id)
        async with self.pool.connection() as conn:
            # xmin names the row version: a reference deleted and made again is read anew; the
            # data comes over only when it is not the one already decoded
            cur = await conn.execute(
                "SELECT v, CASE WHEN v = %s THEN NULL ELSE data END FROM"
                " (SELECT version || '/' || xmin::text AS v, data FROM live_references"
                "  WHERE stream_id = %s AND active) AS r",
                (cached[0] if cached else "", stream_id),
            )
            row = await cur.fetchone()
        if row is None:
            self._decoded.pop(stream_id, None)
            return None
        if row[1] is None and cached is not None:
            return cached[1]
        reference = reference_from_bytes(row[1])
        self._decoded[stream_id] = (str(row[0]), reference)
        return reference

    async def save(
        self, reference: Reference, source_cycles: list[str], *, activate: bool, description: str
    ) -> int:
        """Store ``reference`` as the stream's next version; returns the version."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (reference.stream_id,))
            cur = await conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM live_references WHERE stream_id = %s",
                (reference.stream_id,),
            )
            row = await cur.fetchone()
            version = int(row[0]) if row else 1
            versioned = replace(reference, version=version)
            if activate:
                await conn.execute(
                    "UPDATE live_references SET active = false WHERE stream_id = %s AND active",
                    (reference.stream_id,),
                )
            await conn.execute(
                "INSERT INTO live_references (stream_id, version, active, source_cycles,"
                " n_points, duration_s, description, data)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    reference.stream_id,
                    version,
                    activate,
                    source_cycles,
                    versioned.n_points,
                    versioned.duration_s,
                    description,
                    reference_to_bytes(versioned),
                ),
            )
        return version

    async def retire(self, stream_id: str, version: int, since: datetime, reason: str) -> bool:
        """Retire the active reference ``version`` (its sensors are gone): no longer active,
        the reason added to its description. False when it was not active any more."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE live_references SET active = false, retired_at = %s,"
                " description = left(description || ' (retired: ' || %s || ')', 2000)"
                " WHERE stream_id = %s AND version = %s AND active",
                (since, reason, stream_id, version),
            )
            return cur.rowcount > 0

    async def completed_cycles(self, stream_id: str, limit: int) -> list[tuple[str, str, int, int]]:
        """(cycle_id, recording, start ns, end ns) of the stream's first completed cycles: the
        first ever, or after a reference was retired, the first since then."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT cycle_id, recording, started_at, ended_at FROM live_cycles"
                " WHERE stream_id = %s"
                " AND state = 'completed' AND recording IS NOT NULL"
                " AND started_at >= coalesce((SELECT max(retired_at) FROM live_references"
                "   WHERE stream_id = %s), '-infinity')"
                " ORDER BY started_at LIMIT %s",
                (stream_id, stream_id, limit),
            )
            return [(r[0], r[1], ns_of(r[2]), ns_of(r[3])) for r in await cur.fetchall()]


def _rows_to_bytes(rows: npt.NDArray[np.float64]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def _rows_from_bytes(data: bytes) -> npt.NDArray[np.float64]:
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float64)


def _held_rows(
    stream_id: str, reference_version: int, data: bytes, ids: list[str]
) -> npt.NDArray[np.float64] | None:
    """The rows a model learnt, one per cycle id; None (and a warning) when they cannot be read
    or do not match the ids: the model then learns again from the reference and the next
    healthy cycles instead of failing every cycle's analysis."""
    try:
        rows = _rows_from_bytes(data)
    except (ValueError, EOFError, OSError) as exc:
        why = f"unreadable ({exc})"
    else:
        if rows.ndim == 2 and rows.shape[0] == len(ids) and np.isfinite(rows).all():
            return rows
        why = f"shape {rows.shape} for {len(ids)} cycles, or values not finite"
    log.warning(
        "learned model rows dropped: it learns again",
        extra={"stream_id": stream_id, "reference_version": reference_version, "why": why},
    )
    return None


@dataclass(frozen=True, slots=True)
class Learnt:
    """What a stream's learned model learnt under one reference version: the last healthy
    cycles (ids and rows, oldest first) and how many it learnt from in all."""

    cycle_ids: list[str]
    rows: npt.NDArray[np.float64] | None
    total: int


class Models:
    """What the learned model of each stream and reference version learnt (``live_models``)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def total(self, stream_id: str, reference_version: int) -> int:
        """How many cycles the model learnt from in all (without reading its rows)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT learnt FROM live_models WHERE stream_id = %s AND reference_version = %s",
                (stream_id, reference_version),
            )
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def learnt(self, stream_id: str, reference_version: int) -> Learnt:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT cycle_ids, rows, learnt FROM live_models"
                " WHERE stream_id = %s AND reference_version = %s",
                (stream_id, reference_version),
            )
            row = await cur.fetchone()
        if row is None:
            return Learnt([], None, 0)
        ids = list(row[0])
        rows = _held_rows(stream_id, reference_version, row[1], ids)
        if rows is None:
            return Learnt([], None, 0)  # dropped: the count starts again with the next cycle
        return Learnt(ids, rows, int(row[2]))

    async def learn(
        self,
        stream_id: str,
        reference_version: int,
        cycle_id: str,
        row: npt.NDArray[np.float64],
        keep: int,
    ) -> bool:
        """Add a cycle's row (once: a cycle analysed again is not added twice), keeping the last
        ``keep``; True when it was added."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"model:{stream_id}",)
            )
            cur = await conn.execute(
                "SELECT cycle_ids, rows, learnt FROM live_models"
                " WHERE stream_id = %s AND reference_version = %s",
                (stream_id, reference_version),
            )
            found = await cur.fetchone()
            ids = list(found[0]) if found else []
            if cycle_id in ids:
                return False
            held = _held_rows(stream_id, reference_version, found[1], ids) if found else None
            if held is not None and (held.shape[1] != len(row) or np.any(held[:, 0] != row[0])):
                log.warning(
                    "learned model rows of another format dropped: it learns again",
                    extra={"stream_id": stream_id, "reference_version": reference_version},
                )
                held = None  # rows of an earlier format: never mixed, the model starts again
            again = held is None  # nothing learnt, or rows that cannot be read: start again
            if again:
                ids = []
            rows = np.vstack([held, row]) if held is not None else row[None, :]
            ids.append(cycle_id)
            keep = max(1, keep)
            await conn.execute(
                "INSERT INTO live_models"
                " (stream_id, reference_version, cycle_ids, rows, learnt)"
                " VALUES (%s, %s, %s, %s, 1) ON CONFLICT (stream_id, reference_version)"
                " DO UPDATE SET cycle_ids = EXCLUDED.cycle_ids, rows = EXCLUDED.rows,"
                " learnt = CASE WHEN %s THEN 1 ELSE live_models.learnt + 1 END,"
                " updated_at = now()",
                (stream_id, reference_version, ids[-keep:], _rows_to_bytes(rows[-keep:]), again),
            )
            return True


class History:
    """A stream's last scored cycles under one reference version, for its trend."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def before(
        self, stream_id: str, reference_version: int, ended_at: datetime, cycle_id: str, n: int
    ) -> list[Point]:
        """The ``n`` scored cycles that ended before ``ended_at``, oldest first. They are looked
        for among the stream's last ``4n + 50`` analyses (by the index on when they were made), so
        that the cost stays the same after years of cycles; a cycle analysed long after it ended
        gets a trend of those of its predecessors found there."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM c.ended_at)::float8, d.health_score,"
                " (SELECT jsonb_object_agg(s->>'sensor_id', s->'severity')"
                "  FROM jsonb_array_elements(d.result->'sensors') s),"
                " coalesce((d.result->'model'->>'feeds_score')::boolean, false),"
                " (d.result->'model'->>'ratio_99')::float8,"
                " (SELECT jsonb_object_agg(m->>'sensor_id',"
                "   jsonb_build_array(m->'spe_share', m->'t2_share'))"
                "  FROM jsonb_array_elements(d.result->'model'->'contributions') m)"
                " FROM (SELECT cycle_id, health_score, result FROM live_deviations"
                "   WHERE stream_id = %s AND reference_version = %s"
                "   ORDER BY created_at DESC LIMIT %s) d"
                " JOIN live_cycles c ON c.cycle_id = d.cycle_id"
                " WHERE d.health_score IS NOT NULL AND c.ended_at < %s AND d.cycle_id <> %s"
                " ORDER BY c.ended_at DESC LIMIT %s",
                (stream_id, reference_version, 4 * n + 50, ended_at, cycle_id, n),
            )
            rows = await cur.fetchall()
        out = []
        for r in reversed(rows):
            severities = {k: float(v) for k, v in (r[2] or {}).items()}
            fed = bool(r[3]) and r[4] is not None
            shares = {k: (float(v[0]), float(v[1])) for k, v in (r[5] or {}).items()}
            parts = sensor_deviations(severities, shares if fed else None, r[4] if fed else None)
            out.append(Point(float(r[0]), float(r[1]), parts, bool(r[3])))
        return out


class Results:
    """Analyses on the bus and in ``live_deviations`` (idempotent per cycle and version)."""

    def __init__(self, js: JetStreamContext, pool: AsyncConnectionPool) -> None:
        self.js = js
        self.pool = pool

    async def store(self, result: AnalysisCompleted, *, publish: bool = True) -> None:
        """Store (idempotent) and, with ``publish``, announce on ``vertac.analysis.<id>``."""
        version = result.reference_version or 0
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO live_deviations (cycle_id, reference_version, stream_id,"
                " health_score, risk_class, result) VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
                " ON CONFLICT (cycle_id, reference_version) DO UPDATE SET"
                " health_score = EXCLUDED.health_score, risk_class = EXCLUDED.risk_class,"
                " result = EXCLUDED.result",
                (
                    result.cycle_id,
                    version,
                    result.stream_id,
                    result.health_score,
                    result.risk_class,
                    result.model_dump_json(),
                ),
            )
        if not publish:
            return
        await self.js.publish(
            subjects.analysis(result.stream_id),
            result.model_dump_json().encode(),
            headers={
                subjects.HEADER_CONTENT_TYPE: "application/json",
                subjects.HEADER_MSG_ID: f"{result.cycle_id}:{version}",
            },
        )


@dataclass(frozen=True, slots=True)
class StoredCycle:
    cycle_id: str
    recording: str
    start_ns: int
    end_ns: int
    state: str
    end_reason: str
    completeness: float
    gaps: int


@dataclass(frozen=True, slots=True)
class StoredReference:
    stream_id: str
    version: int
    active: bool
    source_cycles: list[str]
    n_points: int
    duration_s: float
    description: str
    created_at: datetime
    data: bytes | None


_CYCLES_BY_ID = (
    "SELECT cycle_id, recording, started_at, ended_at, state, end_reason, completeness, gaps"
    " FROM live_cycles WHERE stream_id = %s AND cycle_id = ANY(%s)"
    " AND recording IS NOT NULL AND ended_at IS NOT NULL"
)
_CYCLES_OF_DATASET = (
    "SELECT c.cycle_id, c.recording, c.started_at, c.ended_at, c.state, c.end_reason,"
    " c.completeness, c.gaps FROM live_dataset_cycles d JOIN live_cycles c USING (cycle_id)"
    " WHERE d.dataset = %s AND (%s::text IS NULL OR d.label = %s::text)"
    " AND c.recording IS NOT NULL AND c.ended_at IS NOT NULL ORDER BY c.started_at LIMIT 200"
)
_RECENT_CYCLES = (
    "SELECT cycle_id, recording, started_at, ended_at, state, end_reason, completeness, gaps"
    " FROM live_cycles WHERE stream_id = %s AND recording IS NOT NULL AND ended_at IS NOT NULL"
    " ORDER BY started_at DESC LIMIT %s"
)
_REFERENCES = (
    "SELECT stream_id, version, active, source_cycles, n_points, duration_s, description,"
    " created_at, CASE WHEN %s THEN data END FROM live_references"
    " WHERE stream_id = %s AND (%s::int IS NULL OR version = %s::int) ORDER BY version"
)


def _stored_cycle(r: tuple[Any, ...]) -> StoredCycle:
    return StoredCycle(
        r[0], r[1], ns_of(r[2]), ns_of(r[3]), r[4], r[5],
        float(r[6]), int(r[7]),
    )  # fmt: skip


class Catalogue:
    """Reads and small writes behind reference management."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _rows(self, sql: LiteralString, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

    async def cycles(self, stream_id: str, cycle_ids: list[str]) -> list[StoredCycle]:
        rows = await self._rows(_CYCLES_BY_ID, (stream_id, cycle_ids))
        return [_stored_cycle(r) for r in rows]

    async def of_dataset(self, dataset: str, label: str | None) -> list[StoredCycle]:
        """The recorded cycles of a dataset (of any stream), oldest first, at most 200."""
        rows = await self._rows(_CYCLES_OF_DATASET, (dataset, label, label))
        return [_stored_cycle(r) for r in rows]

    async def recent(self, stream_id: str, limit: int) -> list[StoredCycle]:
        rows = await self._rows(_RECENT_CYCLES, (stream_id, limit))
        return [_stored_cycle(r) for r in rows]

    async def references(
        self, stream_id: str, version: int | None = None, *, with_data: bool = False
    ) -> list[StoredReference]:
        rows = await self._rows(_REFERENCES, (with_data, stream_id, version, version))
        return [
            StoredReference(r[0], r[1], r[2], list(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    async def activate(self, stream_id: str, version: int) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT 1 FROM live_references WHERE stream_id = %s AND version = %s",
                (stream_id, version),
            )
            if await cur.fetchone() is None:
                return False
            await conn.execute(
                "UPDATE live_references SET active = false WHERE stream_id = %s AND active",
                (stream_id,),
            )
            await conn.execute(
                "UPDATE live_references SET active = true WHERE stream_id = %s AND version = %s",
                (stream_id, version),
            )
        return True
