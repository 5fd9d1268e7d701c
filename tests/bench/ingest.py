"""End-to-end ingest benchmark on the embedded stack (``make bench``).

Prints, for 16 sensors at 1 kHz in 100 ms frames (16,000 samples a frame):
- baseline: raw JetStream publish -> pull-fetch rate of the same frames, no processing;
- sustained samples/s persisted by ingest with every consumer running (ingest, cycles, analysis,
  alerts as their own processes), publishing as fast as the pipeline takes it;
- publish -> row-written latency p50/p99 at a paced rate below saturation;
- bytes stored per sample in PostgreSQL (table + TOAST + indexes, and payload alone).
Repeats each measurement and reports medians. Environment: VERTAC_BENCH_FRAMES, VERTAC_BENCH_REPEATS.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import nats.errors
import psycopg

from edge.client import Bus
from edge.publisher import frame_message
from edge.simulator import Simulation, build_machine
from schemas.frames import Frame
from services.common.runtime import open_bus
from tests.bench.stack import embedded_stack

SENSORS = 16
RATE_HZ = 1000.0
FRAME_MS = 100
FRAMES = int(os.environ.get("VERTAC_BENCH_FRAMES", "1500"))
REPEATS = int(os.environ.get("VERTAC_BENCH_REPEATS", "3"))


def make_frames(stream_id: str, n: int, seq0: int = 0) -> list[Frame]:
    model = build_machine(
        stream_id=stream_id, sensors=SENSORS, rate_hz=RATE_HZ, slow_rate_hz=RATE_HZ
    )
    sim = Simulation(model, 1_700_000_000_000_000_000)
    step = FRAME_MS * 1_000_000
    return [
        sim.frame(seq0 + i, sim.start_ns + i * step, sim.start_ns + (i + 1) * step)
        for i in range(n)
    ]


async def publish_all(
    bus: Bus, messages: list[tuple[str, bytes, dict[str, str]]], window: int = 512
) -> None:
    pending: list[asyncio.Future] = []
    for subject, payload, headers in messages:
        pending.append(await bus.js.publish_async(subject, payload, headers=headers, wait_stall=30))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def baseline(bus: Bus, frames: list[Frame], run: int) -> float:
    """Samples/s of raw JetStream: publish every frame, then fetch them all back with a pull consumer."""
    subject_stream = f"bench-raw-{run}"
    subject = f"bench.raw.{run}"
    await bus.js.add_stream(name=subject_stream.upper(), subjects=[subject])
    messages = [
        (subject, frame_message(f)[1], {"Nats-Msg-Id": f"raw{run}:{f.seq}"}) for f in frames
    ]
    sub = await bus.js.pull_subscribe(subject, durable=f"raw{run}", stream=subject_stream.upper())
    t0 = time.perf_counter()
    publisher = asyncio.ensure_future(publish_all(bus, messages))
    got = 0
    while got < len(frames):
        try:
            msgs = await sub.fetch(256, timeout=2)
        except nats.errors.TimeoutError:
            continue
        got += len(msgs)
        await asyncio.gather(*(m.ack() for m in msgs))
    await publisher
    elapsed = time.perf_counter() - t0
    await bus.js.delete_stream(subject_stream.upper())
    return sum(f.n_samples for f in frames) / elapsed


async def wait_persisted(url: str, stream_id: str, frames: int, timeout: float = 600) -> float:
    deadline = time.perf_counter() + timeout
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            cur = await conn.execute(
                "SELECT frames FROM live_stream_stats WHERE stream_id = %s", (stream_id,)
            )
            row = await cur.fetchone()
            if row and row[0] >= frames:
                return time.perf_counter()
            await asyncio.sleep(0.02)
    raise TimeoutError(f"{stream_id}: not all {frames} frames persisted in {timeout} s")


async def sustained(bus: Bus, url: str, frames: list[Frame]) -> float:
    stream_id = frames[0].stream_id
    messages = [frame_message(f) for f in frames]
    t0 = time.perf_counter()
    await publish_all(bus, messages)
    t1 = await wait_persisted(url, stream_id, len(frames))
    return sum(f.n_samples for f in frames) / (t1 - t0)


async def latency(
    bus: Bus, url: str, frames: list[Frame], frames_per_s: float
) -> tuple[float, float]:
    """Publish at a paced rate with sent_ns stamped; latency = row written - sent."""
    stream_id = frames[0].stream_id
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        due = t0 + i / frames_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stamped = Frame(f.stream_id, f.seq, f.series, time.time_ns())
        subject, payload, headers = frame_message(stamped)
        await bus.js.publish_async(subject, payload, headers=headers)
        _SENT[(stream_id, f.seq)] = stamped.sent_ns
    await wait_persisted(url, stream_id, len(frames))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT seq, (extract(epoch FROM received_at) * 1e9)::bigint FROM live_frames WHERE stream_id = %s",
            (stream_id,),
        )
        rows = await cur.fetchall()
    lat = sorted((written - _SENT[(stream_id, seq)]) / 1e6 for seq, written in rows)
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


_SENT: dict[tuple[str, int], int] = {}


async def storage(url: str) -> tuple[float, float]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT pg_total_relation_size('live_frames'), sum(octet_length(payload)), sum(n_samples) FROM live_frames"
        )
        total, payload, samples = await cur.fetchone()
    return total / samples, payload / samples


def median(xs: list[float]) -> float:
    return statistics.median(xs)


async def main() -> None:
    async with embedded_stack("vertac-bench-") as stack:
        common = stack.common
        pg_url = common.database_url
        bus = await open_bus(common, "vertac-bench")
        print(
            f"VerTac ingest benchmark: {SENSORS} sensors x {RATE_HZ:.0f} Hz, {FRAME_MS} ms frames "
            f"({SENSORS * int(RATE_HZ * FRAME_MS / 1000)} samples/frame), {FRAMES} frames per run, "
            f"{REPEATS} runs, {os.cpu_count()} cores"
        )
        frames_by_run = [make_frames(f"bench-{r}", FRAMES) for r in range(REPEATS)]
        raw = [await baseline(bus, frames_by_run[r], r) for r in range(REPEATS)]
        print(
            f"  baseline  JetStream publish->fetch, no processing: median {median(raw) / 1e6:6.2f} M samples/s "
            f"({median(raw) / (SENSORS * RATE_HZ * FRAME_MS / 1000):,.0f} frames/s)"
        )
        stack.start("ingest", "cycles", "analysis", "alerts")
        await asyncio.sleep(3)
        rates = [await sustained(bus, pg_url, frames_by_run[r]) for r in range(REPEATS)]
        print(
            f"  pipeline  persisted with ingest+cycles+analysis+alerts running: median {median(rates) / 1e6:6.2f} M samples/s "
            f"(runs: {', '.join(f'{x / 1e6:.2f}' for x in rates)}); ratio to baseline {median(rates) / median(raw):.2f}"
        )
        paced = 0.5 * median(rates) / (SENSORS * RATE_HZ * FRAME_MS / 1000)
        lat_frames = make_frames("bench-latency", int(min(600, paced * 10)))
        p50, p99 = await latency(bus, pg_url, lat_frames, paced)
        print(
            f"  latency   publish -> row written at {paced * SENSORS * RATE_HZ * FRAME_MS / 1000 / 1e6:.2f} M samples/s "
            f"(half the sustained rate): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        total, payload = await storage(pg_url)
        print(
            f"  storage   {total:.2f} bytes/sample in PostgreSQL (table+TOAST+index), {payload:.2f} bytes/sample payload"
        )
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
