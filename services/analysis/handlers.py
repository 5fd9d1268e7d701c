"""Thin handler of the analysis service: a finished cycle in, its comparison out."""

from __future__ import annotations

import asyncio
import logging

from schemas.messages import CycleStateChanged
from services.analysis.adapters import RecordingStore, References, Registry, Results
from services.analysis.logic import (
    CycleData,
    Params,
    Reference,
    analyse,
    build_reference,
    cycle_from_recording,
)
from services.common.consumer import Delivery

log = logging.getLogger(__name__)
NS = 1_000_000_000


class AnalyseCycles:
    """For each completed or aborted cycle: load its recording, compare, publish and store."""

    def __init__(
        self,
        recordings: RecordingStore,
        references: References,
        registry: Registry,
        results: Results,
        params: Params,
        n_points: int,
        auto_reference_cycles: int,
    ) -> None:
        self.recordings = recordings
        self.references = references
        self.registry = registry
        self.results = results
        self.params = params
        self.n_points = n_points
        self.auto_reference_cycles = auto_reference_cycles

    async def __call__(self, batch: list[Delivery[CycleStateChanged]]) -> None:
        for d in batch:
            event = d.item
            if event.state == "running" or event.recording is None:
                continue
            await self.one(event)

    async def load(self, event: CycleStateChanged, recording: str) -> CycleData:
        frame = await self.recordings.get(recording)
        types, _ = await self.registry.sensors(event.stream_id)
        assert event.started_at is not None
        assert event.ended_at is not None
        return cycle_from_recording(
            frame,
            cycle_id=event.cycle_id,
            start_ns=round(event.started_at.timestamp() * NS),
            end_ns=round(event.ended_at.timestamp() * NS),
            aborted=event.state == "aborted",
            end_reason=event.reason if event.state == "aborted" else "",
            completeness=event.completeness,
            gaps=event.gaps,
            sensor_types=types,
        )

    async def one(self, event: CycleStateChanged) -> None:
        assert event.recording is not None
        reference = await self.references.active(event.stream_id)
        if reference is None:
            reference = await self._auto_reference(event)
            if reference is None:
                return
        cycle = await self.load(event, event.recording)
        result = await asyncio.to_thread(analyse, cycle, reference, self.params)
        await self.results.store(result)
        top = result.sensors[0].sensor_id if result.sensors else None
        log.info(
            "cycle analysed",
            extra={
                "cycle_id": event.cycle_id,
                "score": round(result.health_score, 1),
                "risk": result.risk_class,
                "top_sensor": top,
            },
        )

    async def _auto_reference(self, event: CycleStateChanged) -> Reference | None:
        wanted = self.auto_reference_cycles
        if wanted <= 0:
            log.info("no active reference", extra={"stream_id": event.stream_id})
            return None
        chosen = await self.references.completed_cycles(event.stream_id, wanted)
        if len(chosen) < wanted:
            log.info(
                "collecting cycles for the first reference",
                extra={"stream_id": event.stream_id, "have": len(chosen), "need": wanted},
            )
            return None
        ids = [c[0] for c in chosen]
        if event.cycle_id in ids[:-1]:
            return None  # the reference is built when the last of its cycles arrives
        _, units = await self.registry.sensors(event.stream_id)
        types, _ = await self.registry.sensors(event.stream_id)
        cycles = [
            cycle_from_recording(
                await self.recordings.get(recording),
                cycle_id=cycle_id,
                start_ns=start,
                end_ns=end,
                sensor_types=types,
            )
            for cycle_id, recording, start, end in chosen
        ]
        reference = await asyncio.to_thread(
            build_reference,
            cycles,
            version=0,
            n_points=self.n_points,
            params=self.params,
            units=units,
        )
        version = await self.references.save(
            reference,
            ids,
            activate=True,
            description=f"built automatically from the first {wanted} completed cycles",
        )
        log.info("reference created", extra={"stream_id": event.stream_id, "version": version})
        if event.cycle_id in ids:
            return None  # a cycle that makes up the reference is not compared with itself
        return await self.references.active(event.stream_id)
