"""Thin handler of the analysis service: a finished cycle in, its comparison out."""

from __future__ import annotations

import asyncio
import logging
import math

import numpy as np

from schemas.messages import (
    AnalysisCompleted,
    CycleStateChanged,
)
from schemas.timeutil import ns_of
from services.analysis import mspc
from services.analysis.adapters import (
    History,
    Models,
    RecordingStore,
    References,
    Registry,
    Results,
    StoredCycle,
)
from services.analysis.logic import (
    CycleData,
    Params,
    analyse,
    build_reference,
    cycle_from_recording,
    learns_from,
    model_row,
    result_deviations,
)
from services.analysis.trend import Point, TrendParams, trend
from services.common.consumer import Delivery
from services.common.references import Reference, matched, with_names

log = logging.getLogger(__name__)
REFIT_SHARE = 0.1  # the learned model is fitted again once it learnt this share more cycles


async def load_cycle(
    recordings: RecordingStore, c: StoredCycle, types: dict[str, str]
) -> CycleData:
    """A stored cycle's recording as :class:`CycleData`."""
    return cycle_from_recording(
        await recordings.get(c.recording),
        cycle_id=c.cycle_id,
        start_ns=c.start_ns,
        end_ns=c.end_ns,
        aborted=c.state == "aborted",
        end_reason=c.end_reason,
        completeness=c.completeness,
        gaps=c.gaps,
        sensor_types=types,
    )


async def named_reference(
    cycles: list[CycleData], registry: Registry, stream_id: str, n_points: int,
    params: Params,
) -> Reference:  # fmt: skip
    """A reference built from ``cycles`` (off the event loop), with the stream's units and
    sensor names (raises ``ValueError`` when the cycles cannot make one)."""
    _, units = await registry.sensors(stream_id)
    reference = await asyncio.to_thread(
        build_reference, cycles, version=0, n_points=n_points, params=params, units=units
    )
    return with_names(reference, await registry.names(stream_id) or {})


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
        models: Models | None = None,
        history: History | None = None,
        trend_params: TrendParams | None = None,
    ) -> None:
        self.recordings = recordings
        self.references = references
        self.registry = registry
        self.results = results
        self.params = params
        self.n_points = n_points
        self.auto_reference_cycles = auto_reference_cycles
        self.models = models
        self.history = history
        self.trend_params = trend_params or TrendParams()
        # per stream: (reference version, cycles learnt from, the fitted model)
        self._fitted: dict[str, tuple[int, int, mspc.Model | None]] = {}

    async def __call__(self, batch: list[Delivery[CycleStateChanged]]) -> None:
        """Each stream's cycles in order; the streams of a batch side by side, so one cycle's
        round trips to the bus and the database overlap another's numbers. Every cycle is
        carried through before the first failure is raised (its retry then finds the others'
        results stored, as after any redelivery)."""
        by_stream: dict[str, list[CycleStateChanged]] = {}
        for d in batch:
            event = d.item
            if event.state != "running" and event.recording is not None:
                by_stream.setdefault(event.stream_id, []).append(event)

        async def in_order(events: list[CycleStateChanged]) -> None:
            for event in events:
                await self.one(event)

        done = await asyncio.gather(*map(in_order, by_stream.values()), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

    async def load(self, event: CycleStateChanged, recording: str) -> CycleData:
        assert event.started_at is not None
        assert event.ended_at is not None
        stored = StoredCycle(
            cycle_id=event.cycle_id,
            recording=recording,
            start_ns=ns_of(event.started_at) if event.started_ns is None else event.started_ns,
            end_ns=ns_of(event.ended_at) if event.ended_ns is None else event.ended_ns,
            state=event.state,
            end_reason=event.reason if event.state == "aborted" else "",
            completeness=event.completeness,
            gaps=event.gaps,
        )
        types, _ = await self.registry.sensors(event.stream_id)
        return await load_cycle(self.recordings, stored, types)

    async def one(self, event: CycleStateChanged) -> None:
        assert event.recording is not None
        reference = await self.references.active(event.stream_id)
        retired = ""
        if reference is not None:
            reference, retired = await self._on_registered_sensors(event, reference)
        if reference is None:
            reference = await self._auto_reference(event)
            if reference is None:
                return
        cycle = await self.load(event, event.recording)
        model, learnt = await self._model(event.stream_id, reference)
        result = await asyncio.to_thread(analyse, cycle, reference, self.params, model, learnt)
        if retired:
            notes = "; ".join(n for n in (result.qualification, retired) if n)
            result = result.model_copy(update={"qualified": True, "qualification": notes})
        result = await self._with_trend(event, result)
        await self.results.store(result)
        await self._learn(cycle, reference, result)
        top = result.sensors[0].sensor_id if result.sensors else None
        log.info(
            "cycle analysed",
            extra={
                "cycle_id": event.cycle_id,
                "score": None if result.health_score is None else round(result.health_score, 1),
                "risk": result.risk_class,
                "top_sensor": top,
            },
        )

    async def _model(self, stream_id: str, reference: Reference) -> tuple[mspc.Model | None, int]:
        """The learned model of the stream under ``reference`` and its version: how many cycles
        it learnt from in all when it was fitted (again once it learnt about a tenth more)."""
        members = reference.members
        layout = mspc.layout_of(reference)
        own = len(members) if members is not None and layout.readable(members) else 0
        if self.models is None or self.params.model_cycles <= 0:
            return None, own
        # the count first: the rows (about 400 kB for 50 cycles of 17 sensors) only for a refit
        version = own + await self.models.total(stream_id, reference.version)
        cached = self._fitted.get(stream_id)
        if cached is not None and cached[0] == reference.version:
            fitted = cached[1]
            # refitted once it learnt about a tenth more (every cycle while it is young)
            step = max(1, int(fitted * REFIT_SHARE))
            if version == fitted or (cached[2] is not None and 0 <= version - fitted < step):
                return cached[2], fitted
        learnt = await self.models.learnt(stream_id, reference.version)
        version = own + learnt.total
        held = [r for r in (members, learnt.rows) if r is not None and len(r)]
        parts = [r for r in held if layout.readable(r)]
        if len(parts) < len(held):
            # a reference built, or rows learnt, by an earlier release: the model learns anew
            log.warning(
                "learned model rows of an earlier format left out",
                extra={"stream_id": stream_id, "reference_version": reference.version},
            )
        model = None
        if parts:
            model = await asyncio.to_thread(mspc.fit, layout, np.vstack(parts))
        self._fitted[stream_id] = (reference.version, version, model)
        return model, version

    async def _learn(
        self, cycle: CycleData, reference: Reference, result: AnalysisCompleted
    ) -> None:
        """Let the model learn from a healthy cycle: it keeps the last ``model_cycles`` (the
        reference's own always among them), so a slow, healthy drift of the operating point is
        learnt while a fault, outside the model's 95 % limits, is not."""
        if self.models is None or self.params.model_cycles <= 0 or not learns_from(result):
            return
        row = await asyncio.to_thread(model_row, cycle, reference, self.params)
        if row is None:
            return
        own = 0 if reference.members is None else len(reference.members)
        await self.models.learn(
            cycle.stream_id, reference.version, cycle.cycle_id, row, self.params.model_cycles - own
        )

    async def _with_trend(
        self, event: CycleStateChanged, result: AnalysisCompleted
    ) -> AnalysisCompleted:
        """The result with the stream's health trend up to this cycle (none while the cycle
        has no score or too few cycles were scored)."""
        if self.history is None or result.health_score is None:
            return result
        assert event.ended_at is not None
        before = await self.history.before(
            event.stream_id,
            result.reference_version or 0,
            event.ended_at,
            event.cycle_id,
            self.trend_params.window - 1,
        )
        now = Point(
            event.ended_at.timestamp(),
            result.health_score,
            result_deviations(result),
            result.model is not None and result.model.feeds_score,
        )
        found = trend([*before, now], self.trend_params)
        return result if found is None else result.model_copy(update={"trend": found})

    async def _on_registered_sensors(
        self, event: CycleStateChanged, reference: Reference
    ) -> tuple[Reference, str]:
        """The reference on the stream's registered sensor ids (a sensor registered again under
        a new id is found by its name). When too few of its sensors are registered any more,
        the machine's sensor set changed: the reference is retired (a new one is built the way
        the first was) and the note that says so is returned with it."""
        names = await self.registry.names(event.stream_id)
        if names is None:  # not registered (an imported dataset's stream): nothing to match
            return reference, ""
        renamed, found = matched(reference, names)
        needed = max(1, math.ceil(self.params.min_compared_share * len(reference.sensors)))
        if found >= needed:
            return renamed, ""
        assert event.started_at is not None
        why = (
            f"the stream's sensors changed: {found} of the reference's {len(reference.sensors)} "
            "sensors are registered (by id or name)"
        )
        if await self.references.retire(event.stream_id, reference.version, event.started_at, why):
            log.warning(
                "reference retired",
                extra={"stream_id": event.stream_id, "version": reference.version, "why": why},
            )
        wanted = self.auto_reference_cycles
        then = (
            f"a new one is built from the first {wanted} completed cycles from this one on"
            if wanted > 0
            else "make a new one (automatic references are off)"
        )
        return renamed, f"reference version {reference.version} retired, as {why}; {then}"

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
        reference = await named_reference(
            cycles, self.registry, event.stream_id, self.n_points, self.params
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
