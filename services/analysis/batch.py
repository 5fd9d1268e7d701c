"""A dataset analysed as a batch (VerTac v0.1 workflows): every cycle of it compared with one
reference version, the results stored as for live cycles (``live_deviations``, shown by the
cycle's report). They are not published on the bus: an imported cycle from last year must not
raise today's alerts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge.client import Bus
from schemas.messages import AnalysisCompleted
from services.analysis.adapters import Catalogue, RecordingStore, Registry, Results
from services.analysis.handlers import load_cycle
from services.analysis.logic import Params, analyse
from services.common.references import Reference, reference_from_bytes


class BatchError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


async def reference_of(catalogue: Catalogue, stream_id: str, version: int | None) -> Reference:
    """Reference ``version`` of ``stream_id``, or its active one."""
    stored = await catalogue.references(stream_id, version, with_data=True)
    if version is None:
        stored = [r for r in stored if r.active]
    if not stored or stored[0].data is None:
        which = f"version {version}" if version is not None else "active reference"
        raise BatchError(f"stream {stream_id!r} has no {which}", "reference_version")
    return reference_from_bytes(stored[0].data)


async def analyse_dataset(
    bus: Bus,
    pool: Any,
    kv_streams: Any,
    dataset: str,
    stream_id: str,
    version: int | None = None,
    label: str | None = None,
    params: Params | None = None,
    progress: Callable[[AnalysisCompleted], None] | None = None,
) -> list[AnalysisCompleted]:
    """Every completed cycle of ``dataset`` (optionally one label) against reference
    ``version`` (default: the active one) of ``stream_id``; results stored, not published."""
    catalogue = Catalogue(pool)
    reference = await reference_of(catalogue, stream_id, version)
    cycles = [c for c in await catalogue.of_dataset(dataset, label) if c.state == "completed"]
    if not cycles:
        which = f" labelled {label!r}" if label else ""
        raise BatchError(f"dataset {dataset!r} has no completed cycles{which}", "dataset")
    recordings = RecordingStore(bus.nc)
    types, _ = await Registry(kv_streams).sensors(stream_id)
    results = Results(bus.js, pool)
    out = []
    for stored in cycles:
        cycle = await load_cycle(recordings, stored, types)
        result = await asyncio.to_thread(analyse, cycle, reference, params or Params())
        if cycle.stream_id != stream_id:
            details = {**result.details, "reference_stream_id": stream_id}
            result = result.model_copy(update={"details": details})
        await results.store(result, publish=False)
        out.append(result)
        if progress is not None:
            progress(result)
    return out
