"""Wiring of the simulated machine: register the stream, then publish its frames."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.client import Bus, through_outage
from edge.publisher import Encoding, FramePublisher
from edge.registry_client import register_stream, release_frames, reserve_frames
from edge.simulator import MachineModel, Simulation
from schemas.frames import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    frame_ms: float = 100.0
    speed: float = 1.0  # 1 = real time, 10 = ten times faster, 0 = as fast as the bus takes it
    frames: int | None = None
    duration_s: float | None = None
    encoding: Encoding = "binary"
    seq_block: int = 1000
    start_ns: int | None = None


@dataclass
class SimulateResult:
    frames: int = 0
    samples: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    duplicates: int = 0
    retries: int = 0
    reordered: int = 0


async def simulate(
    bus: Bus,
    model: MachineModel,
    options: SimulateOptions,
    *,
    stop: asyncio.Event | None = None,
    on_frame: Callable[[Frame], None] | None = None,
) -> SimulateResult:
    """Publish the machine's frames until ``frames``/``duration_s`` is reached or ``stop`` set."""
    stop = stop or asyncio.Event()
    # until the services answer (and have declared the buckets), this waits like an outage
    await through_outage("registering", lambda: register_stream(bus, model.registration()))
    frame_ns = round(options.frame_ms * 1e6)
    start_ns = options.start_ns or (time.time_ns() // frame_ns) * frame_ns
    sim = Simulation(model, start_ns)
    publisher = FramePublisher(bus.js, encoding=options.encoding)
    result = SimulateResult()
    wall0 = time.monotonic()
    next_seq, block_end = 0, 0
    log.info(
        "simulating",
        extra={"stream_id": model.stream_id, "sensors": len(model.sensors), "speed": options.speed},
    )
    i = 0
    while not stop.is_set():
        if options.frames is not None and i >= options.frames:
            break
        if options.duration_s is not None and i * options.frame_ms / 1000 >= options.duration_s:
            break
        if next_seq >= block_end:
            next_seq = await through_outage(
                "reserving seq", lambda: reserve_frames(bus, model.stream_id, options.seq_block)
            )
            block_end = next_seq + options.seq_block
        window_end = start_ns + (i + 1) * frame_ns
        if options.speed > 0:
            due = wall0 + (i + 1) * options.frame_ms / 1000 / options.speed
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                except TimeoutError:
                    pass
        frame = sim.frame(next_seq, start_ns + i * frame_ns, window_end, time.time_ns())
        await publisher.publish(frame)
        if on_frame is not None:
            on_frame(frame)
        result.frames += 1
        result.samples += frame.n_samples
        result.first_seq = next_seq if result.first_seq is None else result.first_seq
        result.last_seq = next_seq
        next_seq += 1
        i += 1
    await publisher.flush()
    await through_outage(
        "releasing seq", lambda: release_frames(bus, model.stream_id, block_end, next_seq)
    )
    result.duplicates, result.retries = publisher.duplicates, publisher.retries
    result.reordered = publisher.reordered
    log.info("simulation stopped", extra={"frames": result.frames, "samples": result.samples})
    return result
