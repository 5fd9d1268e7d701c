"""Wiring of the cycles service."""

from __future__ import annotations

import asyncio
import functools
import logging

from edge.registry_client import lookup
from schemas import subjects
from schemas.frames import Frame
from services.common import directget
from services.common.config import CommonSettings
from services.common.consumer import DurableConsumer
from services.common.partitions import Partitioned, PartitionLeases, after_previous_holder
from services.common.responder import respond
from services.common.runtime import open_service, run_process
from services.common.sites import each, importers
from services.common.subscriptions import subscription
from services.cycles.adapters import (
    ConfigStore,
    CycleRows,
    Events,
    FrameReader,
    Recordings,
    StateStore,
)
from services.cycles.config import Settings
from services.cycles.control import CycleControl
from services.cycles.datasets import DatasetService
from services.cycles.handlers import CycleEngine

SERVICE = "cycles"
log = logging.getLogger(__name__)


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    """Run the cycle state machines until ``stop`` is set."""
    metrics, bus, pool = await open_service(
        SERVICE, common, settings.metrics_host, settings.metrics_port
    )

    async def read_configs() -> dict[str, bytes]:
        entries = await directget.latest(bus.nc, subjects.KV_CYCLE_CONFIG)
        return {key: msg.data for key, msg in entries.items()}

    configs = ConfigStore(await bus.js.key_value(subjects.KV_CYCLE_CONFIG), read_all=read_configs)
    engine = CycleEngine(
        StateStore(await bus.js.key_value(subjects.KV_CYCLE_STATE)),
        configs,
        FrameReader(bus.nc, bus.js),
        Recordings(await bus.js.object_store(subjects.OBJ_CYCLES)),
        Events(bus.js),
        CycleRows(pool),
        save_every_s=settings.save_every_s,
    )
    leases = PartitionLeases(await bus.js.key_value(subjects.KV_LEASES), SERVICE, nc=bus.nc)
    engine.holds = lambda stream_id: leases.holds(subjects.partition_of(stream_id))
    held: dict[int, tuple[DurableConsumer[Frame], int]] = {}

    async def partition(p: int, done: asyncio.Event) -> None:
        def mine() -> bool:
            return leases.holds(p)

        frames = subscription(SERVICE, "frames").consumer(
            bus.js, settings.durable, engine.on_frames, metrics, partition=p,
            batch=settings.batch, max_deliver=common.max_deliver, ack_wait=settings.ack_wait_s,
            guard=mine, handler_acks=True, sensors=engine.configs.trigger_sensors,
            pause_s=settings.fetch_pause_s, probe_every_s=0.0,  # ownership() judges silence
        )  # fmt: skip
        commands = subscription(SERVICE, "commands").consumer(
            bus.js, settings.durable, engine.on_commands, metrics, partition=p,
            max_deliver=common.max_deliver, ack_wait=settings.ack_wait_s, guard=mine,
        )  # fmt: skip
        await frames.declare()
        await commands.declare()
        await after_previous_holder([frames, commands], done)
        engine.states.forget_partition(p)  # another replica may have written them meanwhile
        engine.window.forget(p)
        held[p] = (frames, engine.clock())
        try:
            await asyncio.gather(frames.run(done), commands.run(done))
        finally:
            held.pop(p, None)
            # what this replica applied is written before the lease is given back; what cannot
            # be written now is applied again by the next holder
            try:
                await engine.flush(engine.streams_of(p))
            except Exception as exc:  # the frames stay unacknowledged and come back
                log.warning(
                    "cycle state of a partition not written",
                    extra={"partition": p, "error": repr(exc)},
                )

    def ownership(stream_id: str) -> tuple[int, int] | None:
        entry = held.get(subjects.partition_of(stream_id))
        if entry is None:
            return None
        consumer, since_ns = entry
        if consumer.seeing_since_ns is None or consumer.waiting():
            return since_ns, -1  # the bus is out of reach, or frames wait for an outage
        return max(since_ns, consumer.seeing_since_ns), consumer.backlog

    engine.ownership = ownership
    datasets = DatasetService(pool, bus)
    await respond(bus.nc, subjects.dataset_requests(), SERVICE, datasets.handle, "dataset")
    streams = await bus.js.key_value(subjects.KV_STREAMS)
    control = CycleControl(configs, functools.partial(lookup, streams))
    await respond(bus.nc, subjects.cycle_requests(), SERVICE, control.handle, "cycle")
    rows = CycleRows(pool)
    sites = await importers(
        SERVICE, bus.js, settings.durable, common.site_ids, metrics,
        {"cycles": each(lambda e: rows.upsert(e, e.reason if e.state == "running" else ""))},
        max_deliver=common.max_deliver,
    )  # fmt: skip
    log.info("cycles running", extra={"member": leases.member, "partitions": subjects.PARTITIONS})
    try:
        await asyncio.gather(
            Partitioned(leases, partition).run(stop),
            engine.run_ticks(stop, settings.tick_s),
            *(c.run(stop) for c in sites),
        )
    finally:
        await bus.close()
        await pool.close()


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
