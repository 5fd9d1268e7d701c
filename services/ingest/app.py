"""Wiring of the ingest service: settings, bus, database, consumers, lifespan."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from edge.registry_client import lookup
from schemas import subjects
from services.common.config import CommonSettings
from services.common.consumer import DurableConsumer
from services.common.runtime import open_service, run_process
from services.common.sites import imports_of
from services.common.subscriptions import subscription
from services.ingest import retention
from services.ingest.adapters import InfluxSink, PgFrameStore
from services.ingest.config import Settings
from services.ingest.handlers import (
    DatasetIds,
    ImportRegistrations,
    PersistAndDigest,
    PersistFrames,
    PersistRegistrations,
    WriteInflux,
)
from services.ingest.registry import RegistryResponder

SERVICE = "ingest"
log = logging.getLogger(__name__)


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    """Run the ingest consumers until ``stop`` is set."""
    metrics, bus, pool = await open_service(
        SERVICE, common, settings.metrics_host, settings.metrics_port
    )
    store = PgFrameStore(pool)

    def persist_frames(persist: PersistFrames) -> PersistFrames | PersistAndDigest:
        # a site also publishes each frame's digest: what a central may take instead of samples
        return PersistAndDigest(persist, bus.js) if common.site and settings.digest else persist

    consumers: list[DurableConsumer[Any]] = [
        subscription(SERVICE, "frames").consumer(
            bus.js,
            settings.durable,
            persist_frames(
                PersistFrames(
                    store, metrics, settings.durable, settings.zstd_level, rollups=settings.rollups
                )
            ),
            metrics,
            batch=settings.batch,
            linger_s=settings.linger_s,
            max_deliver=common.max_deliver,
            sensors=lambda _: (),  # checked whole, stored as sent, rolled up from the body
            stores=True,
            pipelined=True,  # the next batch gathers while one is written
        )
        for _ in range(settings.writers)  # on one durable, as replicas share it
    ] + [
        subscription(SERVICE, "registry").consumer(
            bus.js,
            settings.durable,
            PersistRegistrations(store),
            metrics,
            max_deliver=common.max_deliver,
        ),
    ]
    streams = await bus.js.key_value(subjects.KV_STREAMS)
    site_rows = imports_of(SERVICE)
    for site in common.site_ids:  # central: each site's frames and registrations, stored
        consumers += [
            site_rows["frames"].consumer(
                bus.js, settings.durable, site,
                PersistFrames(store, metrics, settings.durable, settings.zstd_level,
                              rollups=settings.rollups),
                metrics, max_deliver=common.max_deliver, linger_s=settings.linger_s,
                pipelined=True,
            ),
            site_rows["registry"].consumer(
                bus.js, settings.durable, site, ImportRegistrations(store, streams), metrics,
                max_deliver=common.max_deliver,
            ),
        ]  # fmt: skip
    sink = None
    if settings.influx_url:
        sink = InfluxSink(
            settings.influx_url, settings.influx_token, settings.influx_org, settings.influx_bucket
        )
        row = subscription(SERVICE, "influx")
        durable = row.durable_name(settings.durable)
        datasets = DatasetIds(
            functools.partial(lookup, await bus.js.key_value(subjects.KV_STREAMS))
        )
        consumers.append(
            row.consumer(
                bus.js,
                settings.durable,
                WriteInflux(sink, metrics, durable, datasets),
                metrics,
                batch=settings.influx_batch,
                max_deliver=settings.influx_max_deliver,
                nak_delay=settings.influx_retry_delay_s,
            )
        )
    for consumer in consumers:
        await consumer.declare()
    registry = RegistryResponder(bus.js, streams, await bus.js.key_value(subjects.KV_SEQ))
    keep_days = retention.plan(common.raw_retention_days, common.rollup_retention_days)
    await retention.maintain_once(pool, keep_days)
    log.info("ingest running", extra={"influx": bool(sink), "metrics_port": settings.metrics_port})
    try:
        await asyncio.gather(
            *(c.run(stop) for c in consumers),
            registry.serve(bus.nc, stop),
            retention.keep(pool, keep_days, settings.retention_check_s, stop),
        )
    finally:
        await bus.close()
        await pool.close()
        if sink is not None:
            sink.close()


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
