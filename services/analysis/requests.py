"""Reference requests (``vertac.references.<stream_id>.<op>``): create, activate, list, get,
dry-run; each answered with a status code and a JSON body."""

from __future__ import annotations

import asyncio
import dataclasses

from schemas.messages import (
    ActivateReference,
    CreateReference,
    DryRunCycle,
    DryRunReference,
    DryRunResult,
    ListReferences,
    ReferenceInfo,
    ReferenceSensor,
)
from services.analysis.adapters import (
    Catalogue,
    RecordingStore,
    References,
    Registry,
    StoredCycle,
    StoredReference,
)
from services.analysis.handlers import load_cycle, named_reference
from services.analysis.logic import (
    CycleData,
    Params,
    analyse,
    build_reference,
)
from services.common.references import Reference, reference_from_bytes
from services.common.responder import RequestError, answer


def reference_curves(reference: Reference, envelope_k: float) -> list[ReferenceSensor]:
    """Per sensor the reference's mean and its envelope ``mean ± envelope_k · spread``."""
    return [
        ReferenceSensor(
            sensor_id=r.sensor_id,
            sensor_type=r.sensor_type,
            unit=r.unit,
            mean=r.mean.tolist(),
            lower=(r.mean - envelope_k * r.spread).tolist(),
            upper=(r.mean + envelope_k * r.spread).tolist(),
        )
        for r in reference.sensors.values()
    ]


class ReferenceService:
    """Answers ``vertac.references.<stream_id>.<op>`` requests."""

    def __init__(
        self,
        catalogue: Catalogue,
        references: References,
        recordings: RecordingStore,
        registry: Registry,
        params: Params,
        n_points: int,
    ) -> None:
        self.catalogue = catalogue
        self.references = references
        self.recordings = recordings
        self.registry = registry
        self.params = params
        self.n_points = n_points

    async def _cycles(self, stream_id: str, cycle_ids: list[str]) -> list[CycleData]:
        found = {c.cycle_id: c for c in await self.catalogue.cycles(stream_id, cycle_ids)}
        missing = [c for c in cycle_ids if c not in found]
        if missing:
            raise RequestError(
                404, f"no recorded cycle {', '.join(missing)} on {stream_id}", "cycle_ids"
            )
        not_good = [c for c in cycle_ids if found[c].state != "completed"]
        if not_good:
            raise RequestError(
                422, f"only completed cycles make a reference: {', '.join(not_good)}", "cycle_ids"
            )
        types, _ = await self.registry.sensors(stream_id)
        return [await self._load(found[c], types) for c in cycle_ids]

    async def _load(self, c: StoredCycle, types: dict[str, str]) -> CycleData:
        return await load_cycle(self.recordings, c, types)

    async def _build(self, stream_id: str, cycle_ids: list[str]) -> Reference:
        cycles = await self._cycles(stream_id, cycle_ids)
        try:
            return await named_reference(
                cycles, self.registry, stream_id, self.n_points, self.params
            )
        except ValueError as exc:
            raise RequestError(422, str(exc), "cycle_ids") from exc

    def _info(self, stored: StoredReference, *, curves: bool) -> ReferenceInfo:
        ref = reference_from_bytes(stored.data) if stored.data is not None else None
        return ReferenceInfo(
            stream_id=stored.stream_id,
            reference_version=stored.version,
            active=stored.active,
            source_cycles=stored.source_cycles,
            n_points=stored.n_points,
            duration_s=stored.duration_s,
            description=stored.description,
            created_at=stored.created_at,
            sensors=sorted(ref.sensors) if ref else [],
            curves=reference_curves(ref, self.params.envelope_k)
            if ref is not None and curves
            else None,
        )

    async def _one(self, stream_id: str, version: int, *, curves: bool) -> ReferenceInfo:
        stored = await self.catalogue.references(stream_id, version, with_data=True)
        if not stored:
            raise RequestError(
                404, f"{stream_id} has no reference version {version}", "reference_version"
            )
        return self._info(stored[0], curves=curves)

    async def create(self, req: CreateReference) -> ReferenceInfo:
        if req.dataset:
            return await self._create_from_dataset(req, req.dataset)
        reference = await self._build(req.stream_id, req.cycle_ids)
        version = await self.references.save(
            reference, req.cycle_ids, activate=req.activate, description=req.description
        )
        return await self._one(req.stream_id, version, curves=False)

    async def _create_from_dataset(self, req: CreateReference, dataset: str) -> ReferenceInfo:
        """A reference for ``req.stream_id`` from a dataset's cycles (of any stream): a batch
        dataset imported from files can be the golden cycles of a live stream."""
        found = [c for c in await self.catalogue.of_dataset(dataset, req.label)
                 if c.state == "completed"]  # fmt: skip
        if not found:
            which = f" labelled {req.label!r}" if req.label else ""
            raise RequestError(404, f"dataset {dataset!r} has no completed cycles{which}",
                               "dataset")  # fmt: skip
        types, units = await self.registry.sensors(req.stream_id)
        cycles = [await self._load(c, types) for c in found]
        try:
            built = await asyncio.to_thread(
                build_reference, cycles, version=0, n_points=self.n_points, params=self.params,
                units=units,
            )  # fmt: skip
        except ValueError as exc:
            raise RequestError(422, str(exc), "dataset") from exc
        reference = dataclasses.replace(built, stream_id=req.stream_id)
        description = req.description or f"built from dataset {dataset}" + (
            f" ({req.label})" if req.label else ""
        )
        ids = [c.cycle_id for c in cycles]
        version = await self.references.save(
            reference, ids, activate=req.activate, description=description
        )
        return await self._one(req.stream_id, version, curves=False)

    async def activate(self, req: ActivateReference) -> ReferenceInfo:
        if not await self.catalogue.activate(req.stream_id, req.reference_version):
            raise RequestError(
                404,
                f"{req.stream_id} has no reference version {req.reference_version}",
                "reference_version",
            )
        return await self._one(req.stream_id, req.reference_version, curves=False)

    async def list(self, req: ListReferences) -> list[ReferenceInfo]:
        if req.reference_version is not None:
            return [await self._one(req.stream_id, req.reference_version, curves=True)]
        return [
            self._info(r, curves=False)
            for r in await self.catalogue.references(req.stream_id, with_data=True)
        ]

    async def dry_run(self, req: DryRunReference) -> DryRunResult:
        if req.reference_version is not None:
            stored = await self.catalogue.references(
                req.stream_id, req.reference_version, with_data=True
            )
            if not stored or stored[0].data is None:
                raise RequestError(
                    404,
                    f"{req.stream_id} has no reference version {req.reference_version}",
                    "reference_version",
                )
            candidate = reference_from_bytes(stored[0].data)
            name = f"version {req.reference_version}"
        else:
            candidate = await self._build(req.stream_id, req.cycle_ids)
            name = f"made from {len(req.cycle_ids)} cycles"
        types, _ = await self.registry.sensors(req.stream_id)
        results = []
        for stored_cycle in await self.catalogue.recent(req.stream_id, req.last_n):
            cycle = await self._load(stored_cycle, types)
            result = await asyncio.to_thread(analyse, cycle, candidate, self.params)
            results.append(
                DryRunCycle(
                    cycle_id=cycle.cycle_id,
                    health_score=result.health_score,
                    risk_class=result.risk_class,
                    top_sensor=result.sensors[0].sensor_id if result.sensors else None,
                )
            )
        scores = [r.health_score for r in results if r.health_score is not None]
        return DryRunResult(
            stream_id=req.stream_id,
            candidate=name,
            cycles=results,
            mean_score=sum(scores) / len(scores) if scores else None,
            alerts=sum(1 for s in scores if s < req.alert_below),
        )

    async def handle(self, op: str, data: bytes) -> tuple[int, bytes]:
        """Serve one request; returns a status code and a JSON body."""
        return await answer(
            {
                "create": (CreateReference, self.create),
                "activate": (ActivateReference, self.activate),
                "dry_run": (DryRunReference, self.dry_run),
                "list": (ListReferences, self.list),
                "get": (ListReferences, self.list),
            },
            op,
            data,
            "reference",
        )
