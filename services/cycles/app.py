"""Wiring of the cycles service."""

from __future__ import annotations

import asyncio
import logging

from schemas import subjects
from schemas.messages import CycleCommand
from services.common.config import CommonSettings
from services.common.consumer import DurableConsumer
from services.common.decoding import decode_frame, model_decoder
from services.common.runtime import open_service, run_process
from services.cycles.adapters import (
    ConfigStore,
    CycleRows,
    Events,
    FrameReader,
    Recordings,
    StateStore,
)
from services.cycles.config import Settings
from services.cycles.handlers import CycleEngine

SERVICE = "cycles"
log = logging.getLogger(__name__)


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    """Run the cycle state machines until ``stop`` is set."""
    metrics, bus, pool = await open_service(
        SERVICE, common, settings.metrics_host, settings.metrics_port
    )
    engine = CycleEngine(
        StateStore(await bus.js.key_value(subjects.KV_CYCLE_STATE)),
        ConfigStore(await bus.js.key_value(subjects.KV_CYCLE_CONFIG)),
        FrameReader(bus.js),
        Recordings(await bus.js.object_store(subjects.OBJ_CYCLES)),
        Events(bus.js),
        CycleRows(pool),
    )
    frames = DurableConsumer(
        bus.js, service=SERVICE, durable=settings.durable, stream=subjects.SAMPLES.name,
        subject=subjects.all_of("samples"), decode=decode_frame, handle=engine.on_frames,
        metrics=metrics, batch=settings.batch, max_deliver=common.max_deliver,
    )  # fmt: skip
    commands = DurableConsumer(
        bus.js, service=SERVICE, durable=f"{settings.durable}-control",
        stream=subjects.CONTROL.name, subject=subjects.all_of("control"),
        decode=model_decoder(CycleCommand), handle=engine.on_commands, metrics=metrics,
        batch=16, max_deliver=common.max_deliver,
    )  # fmt: skip
    engine.backlog = lambda: frames.backlog
    await frames.declare()
    await commands.declare()
    log.info(
        "cycles running", extra={"consumers": [settings.durable, f"{settings.durable}-control"]}
    )
    try:
        await asyncio.gather(
            frames.run(stop), commands.run(stop), engine.run_ticks(stop, settings.tick_s)
        )
    finally:
        await bus.close()
        await pool.close()


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
