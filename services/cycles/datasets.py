"""Dataset requests (``vertac.datasets.<stream_id>.<op>``): the cycles service owns cycles and
the datasets that file them, so it alone writes ``live_cycles``, ``live_dataset_cycles`` and
the recordings of imported cycles. The gateway sends the requests; an import's file travels in
the object store ``vertac_uploads``, which the gateway fills and empties."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from edge.client import Bus, until_answered
from edge.registry_client import (
    RegistryBusy,
    RegistryRefused,
    lookup,
    register_stream,
    registry_call,
)
from schemas import subjects
from schemas.frames import pack
from schemas.messages import (
    DatasetEntry,
    DatasetImported,
    DatasetImportedCycle,
    DatasetRequest,
    RegistryRequest,
)
from schemas.timeutil import NS, datetime_of
from services.common import directget
from services.common.responder import RequestError, per_stream
from services.cycles.dataset_files import (
    DatasetError,
    ParsedCycle,
    cycle_id_of,
    parse_cycles,
    read_file,
    registration_for,
    unpack_upload,
)

_CYCLE_ROW = """
INSERT INTO live_cycles (cycle_id, stream_id, state, started_at, ended_at, duration_s, end_reason,
    samples, cycle_no, frames, gaps, late_frames, replayed_frames, completeness, recording,
    start_reason, updated_at)
VALUES (%(cycle_id)s, %(stream_id)s, 'completed', %(started_at)s, %(ended_at)s, %(duration_s)s,
    '', %(samples)s::jsonb, %(cycle_no)s, 1, 0, 0, 0, 1.0, %(recording)s, 'import', now())
ON CONFLICT (cycle_id) DO UPDATE SET
    started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
    duration_s = EXCLUDED.duration_s, samples = EXCLUDED.samples,
    recording = EXCLUDED.recording, updated_at = now()
WHERE live_cycles.start_reason = 'import'
RETURNING cycle_id
"""
_ENTRY = """
INSERT INTO live_dataset_cycles (dataset, cycle_id, stream_id, label, note)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (dataset, cycle_id) DO UPDATE SET label = EXCLUDED.label, note = EXCLUDED.note
RETURNING dataset, cycle_id, stream_id, label, note, added_at
"""


def parse_upload(filename: str, data: bytes) -> list[ParsedCycle]:
    """Every cycle of an uploaded file (or zip of files)."""
    return [
        c
        for name, raw in unpack_upload(filename, data)
        for c in parse_cycles(name, read_file(name, raw))
    ]


class DatasetService:
    """Answers ``vertac.datasets.<stream_id>.<op>`` requests: add, remove, import."""

    def __init__(self, pool: AsyncConnectionPool, bus: Bus, *, admin: bool = False) -> None:
        self.pool = pool
        self.bus = bus
        self.admin = admin  # the CLI's own import: may write the registry without its service
        self._importing = asyncio.Lock()  # one file in memory at a time
        # requests on vertac.datasets.<stream_id>.<op>
        self.handle = per_stream(
            {
                "add": (DatasetRequest, self.add),
                "remove": (DatasetRequest, self.remove),
                "import": (DatasetRequest, self.import_upload),
            },
            "dataset",
        )

    async def add(self, stream_id: str, req: DatasetRequest) -> DatasetEntry:
        """File one of the stream's recorded cycles; filing it again updates label and note."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT recording FROM live_cycles WHERE cycle_id = %s AND stream_id = %s",
                (req.cycle_id, stream_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise RequestError(404, f"no cycle {req.cycle_id!r} on {stream_id}", "cycle_id")
            if row[0] is None:
                raise RequestError(
                    409, f"cycle {req.cycle_id!r} has no recording yet (still running?)",
                    "cycle_id",
                )  # fmt: skip
            async with conn.cursor(row_factory=class_row(DatasetEntry)) as entries:
                await entries.execute(
                    _ENTRY, (req.dataset, req.cycle_id, stream_id, req.label, req.note)
                )
                entry = await entries.fetchone()
        assert entry is not None
        return entry

    async def remove(self, stream_id: str, req: DatasetRequest) -> bytes:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM live_dataset_cycles WHERE dataset = %s AND cycle_id = %s"
                " AND stream_id = %s",
                (req.dataset, req.cycle_id, stream_id),
            )
        if cur.rowcount == 0:
            raise RequestError(
                404, f"cycle {req.cycle_id!r} is not in dataset {req.dataset!r}", "cycle_id"
            )
        return json.dumps({"removed": True}).encode()

    async def import_upload(self, stream_id: str, req: DatasetRequest) -> DatasetImported:
        """Store the cycles of the uploaded file on the stream and file them."""
        if not req.upload:
            raise RequestError(422, "an import names its upload", "upload")
        async with self._importing:
            try:  # direct gets: a read leaves no consumer behind
                data = await directget.read_object(self.bus.nc, subjects.OBJ_UPLOADS, req.upload)
            except directget.ObjectMissing as exc:
                raise RequestError(404, f"no upload {req.upload!r}: {exc}", "upload") from exc
            try:
                parsed = await asyncio.to_thread(parse_upload, req.filename, data)
                del data
                imported = await self.store_cycles(req.dataset, stream_id, parsed, req.label)
            except DatasetError as exc:
                raise RequestError(422, exc.message, exc.field) from exc
        return DatasetImported(dataset=req.dataset, stream_id=stream_id, cycles=imported)

    async def _registered(self, dataset: str, stream_id: str, cycles: list[ParsedCycle]) -> Any:
        record = await lookup(await self.bus.js.key_value(subjects.KV_STREAMS), stream_id)
        if record is not None:
            return record
        try:
            registration = registration_for(dataset, stream_id, cycles)
            if self.admin:
                record, _, _ = await register_stream(self.bus, registration)
            else:  # through ingest's registry, the one writer of the registry
                request = RegistryRequest(op="register", registration=registration)
                reply = await until_answered(
                    lambda: registry_call(self.bus, stream_id, request),
                    retry=(RegistryBusy,),
                )
                if reply.registered is None:
                    raise RequestError(503, "the registry answered without the registration")
                record = reply.registered
        except (nats.errors.NoRespondersError, RegistryBusy) as exc:
            raise RequestError(
                503, "no ingest service answers registry requests; start it and retry"
            ) from exc
        except RegistryRefused as exc:
            raise RequestError(422, exc.reason, "files") from exc
        return record

    async def store_cycles(
        self, dataset: str, stream_id: str, cycles: list[ParsedCycle], label: str = ""
    ) -> list[DatasetImportedCycle]:
        """Store parsed cycles like live ones (recording, ``live_cycles`` row, dataset entry),
        registering the stream from the files when it is not registered yet (through the
        registry service) and otherwise checking every sensor is. Importing the same files
        again updates them."""
        if not cycles:
            raise DatasetError("no cycles to import", "files")
        record = await self._registered(dataset, stream_id, cycles)
        known = {s.id for s in record.sensors}
        for c in cycles:
            unknown = sorted(set(c.series) - known)
            if unknown:
                raise DatasetError(
                    f"cycle {c.key!r} has sensors {unknown} that stream {stream_id!r} does not "
                    f"register (it has {sorted(known)})",
                    "files",
                )
        store = await self.bus.js.object_store(subjects.OBJ_CYCLES)
        out = []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(max(cycle_no), -1) FROM live_cycles WHERE stream_id = %s",
                (stream_id,),
            )
            row = await cur.fetchone()
            next_no = int(row[0]) + 1 if row else 0
        for c in cycles:
            cycle_id = cycle_id_of(dataset, c.key)
            await store.put(cycle_id, pack(c.frame(stream_id)))
            start, end = c.start_ns, c.end_ns
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_CYCLE_ROW, {
                    "cycle_id": cycle_id, "stream_id": stream_id, "started_at": datetime_of(start),
                    "ended_at": datetime_of(end), "duration_s": (end - start) / NS,
                    "samples": json.dumps(c.samples), "cycle_no": next_no, "recording": cycle_id,
                })  # fmt: skip
                if await cur.fetchone() is None:
                    raise DatasetError(
                        f"cycle id {cycle_id!r} belongs to a live cycle; rename the file or its "
                        "cycle column",
                        "files",
                    )
                await conn.execute(_ENTRY, (dataset, cycle_id, stream_id, c.label or label, ""))
            next_no += 1
            out.append(
                DatasetImportedCycle(
                    cycle_id=cycle_id, key=c.key, label=c.label or label,
                    samples=sum(c.samples.values()), duration_s=(end - start) / NS,
                )
            )  # fmt: skip
        return out
