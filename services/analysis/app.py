"""Wiring of the analysis service."""

from __future__ import annotations

import asyncio
import functools
import logging

from schemas import subjects
from schemas.messages import CreateReference
from services.analysis.adapters import (
    Catalogue,
    History,
    Models,
    RecordingStore,
    References,
    Registry,
    Results,
)
from services.analysis.config import Settings
from services.analysis.dtw import warm_up
from services.analysis.handlers import AnalyseCycles
from services.analysis.logic import Params
from services.analysis.requests import ReferenceService
from services.analysis.trend import TrendParams
from services.common.config import CommonSettings
from services.common.consumer import BatchHandler, Delivery
from services.common.failures import TransientError
from services.common.responder import respond
from services.common.runtime import open_service, run_process
from services.common.sites import each, importers
from services.common.subscriptions import subscription

SERVICE = "analysis"
log = logging.getLogger(__name__)


def params_of(settings: Settings) -> Params:
    return Params(
        band_share=settings.band_share,
        envelope_k=settings.envelope_k,
        drift_share_slow=settings.drift_share_slow,
        workers=settings.workers,
        model_cycles=settings.model_cycles,
        model_feeds_from=settings.model_feeds_from,
    )


def trend_params_of(settings: Settings) -> TrendParams:
    return TrendParams(
        window=settings.trend_window,
        min_cycles=min(TrendParams().min_cycles, settings.trend_window),
        threshold=settings.trend_threshold,
        horizon_cycles=settings.trend_horizon_cycles,
    )


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    """Analyse finished cycles until ``stop`` is set."""
    await asyncio.to_thread(warm_up)  # compile the DTW kernels before the first cycle
    metrics, bus, pool = await open_service(
        SERVICE, common, settings.metrics_host, settings.metrics_port
    )
    recordings = RecordingStore(bus.nc)
    registry = Registry(await bus.js.key_value(subjects.KV_STREAMS))
    references = References(pool)
    handler = AnalyseCycles(
        recordings,
        references,
        registry,
        Results(bus.js, pool),
        params_of(settings),
        settings.n_points,
        settings.auto_reference_cycles,
        models=Models(pool),
        history=History(pool),
        trend_params=trend_params_of(settings),
    )
    service = ReferenceService(
        Catalogue(pool), references, recordings, registry, params_of(settings), settings.n_points
    )

    await respond(
        bus.nc,
        subjects.reference_requests(),
        SERVICE,
        lambda _stream_id, op, data: service.handle(op, data),
        "reference",
    )
    consumer = subscription(SERVICE, "cycles").consumer(
        bus.js, settings.durable, handler, metrics, max_deliver=common.max_deliver, ack_wait=120
    )
    await consumer.declare()
    if common.site:  # a site of a central VerTac: the references central asks for
        pushed = subscription(SERVICE, "refpush").consumer(
            bus.js, settings.durable, references_from_central(service), metrics,
            max_deliver=common.max_deliver, ack_wait=120,
        )  # fmt: skip
        await pushed.declare()
    results = Results(bus.js, pool)
    sites = await importers(
        SERVICE, bus.js, settings.durable, common.site_ids, metrics,
        {"analysis": each(functools.partial(results.store, publish=False))},
        max_deliver=common.max_deliver,
    )  # fmt: skip
    log.info("analysis running", extra={"durable": settings.durable})
    try:
        more = [pushed.run(stop)] if common.site else []
        await asyncio.gather(consumer.run(stop), *more, *(c.run(stop) for c in sites))
    finally:
        await bus.close()
        await pool.close()


def references_from_central(service: ReferenceService) -> BatchHandler[CreateReference]:
    """At a site: each reference central asked for, made as if asked here; one that cannot be
    made (unknown cycles, ...) is logged and dropped, one that failed for a while is retried."""

    async def handle(batch: list[Delivery[CreateReference]]) -> None:
        for d in batch:
            status, body = await service.handle("create", d.item.model_dump_json().encode())
            if status >= 500:
                raise TransientError(f"reference from central not made yet: {body[:200]!r}")
            if status >= 400:
                log.warning("reference from central not made",
                            extra={"stream_id": d.item.stream_id, "status": status,
                                   "reason": body[:300].decode(errors="replace")})  # fmt: skip
            else:
                log.info("reference from central made", extra={"stream_id": d.item.stream_id})

    return handle


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
