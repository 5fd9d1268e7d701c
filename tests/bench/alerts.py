"""Alert latency benchmark (``make bench``): from the publication of an offending frame to the
alert event on the bus, with 100,000 samples/s of background load on another stream.

Runs nats-server and PostgreSQL embedded, ingest and alerts as processes. Prints p50/p99 of the
latency, and the same probe's publish -> JetStream ack time as the baseline of the bus itself.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import numpy as np

from edge.publisher import frame_message
from schemas import subjects
from schemas.frames import Frame, Series
from schemas.messages import AlertChanged, AlertRule
from services.common.runtime import open_bus
from tests.bench.stack import embedded_stack, percentile

PROBES = int(os.environ.get("VERTAC_BENCH_PROBES", "200"))
BACKGROUND = 100_000  # samples per second
NS = 1_000_000_000


async def background(bus, stop: asyncio.Event) -> int:  # type: ignore[no-untyped-def]
    """16 sensors x 100 samples per frame at 62.5 frames/s = 100,000 samples/s."""
    rng = np.random.default_rng(1)
    per_frame = 1600
    period = per_frame / BACKGROUND
    seq, t0 = 0, time.monotonic()
    while not stop.is_set():
        start = time.time_ns()
        series = tuple(
            Series(f"s{i}", rng.normal(size=100).astype("f4"), start, 1_000_000) for i in range(16)
        )
        subject, payload, headers = frame_message(Frame("bench-bg", seq, series))
        await bus.js.publish_async(subject, payload, headers=headers)
        seq += 1
        await asyncio.sleep(max(0.0, t0 + seq * period - time.monotonic()))
    return seq * per_frame


async def main() -> None:
    async with embedded_stack("vertac-bench-alerts-") as stack:
        common = stack.common
        bus = await open_bus(common, "vertac-bench")
        kv = await bus.js.key_value(subjects.KV_ALERT_RULES)
        rule = AlertRule(
            rule_id="hot", stream_id="bench-alert", kind="limit", sensor_id="p", hi=100
        )
        await kv.put("bench-alert.hot", rule.model_dump_json().encode())
        stack.start("ingest", "alerts", VERTAC_ALERTS_RERAISE_WINDOW_S="3600")
        await asyncio.sleep(4)
        received: dict[int, int] = {}

        async def on_alert(msg) -> None:  # type: ignore[no-untyped-def]
            event = AlertChanged.model_validate_json(msg.data)
            if event.state == "raised":
                received.setdefault(event.occurrences, time.time_ns())

        await bus.nc.subscribe("vertac.alerts.bench-alert.*", cb=on_alert)
        stop = asyncio.Event()
        load = asyncio.ensure_future(background(bus, stop))
        await asyncio.sleep(2)
        sent: dict[int, int] = {}
        acks: list[float] = []
        for k in range(PROBES):
            for value, seq in ((150.0, 2 * k), (0.0, 2 * k + 1)):
                t = time.time_ns()
                frame = Frame("bench-alert", seq, (Series("p", np.array([value]), t, 1),), t)
                subject, payload, headers = frame_message(frame)
                before = time.time_ns()
                await bus.js.publish(subject, payload, headers=headers)
                if value > 100:
                    sent[k + 1] = before
                    acks.append((time.time_ns() - before) / 1e6)
                await asyncio.sleep(0.05)
        await asyncio.sleep(2)
        stop.set()
        samples_bg = await load
        latencies = [(received[n] - sent[n]) / 1e6 for n in sent if n in received]
        print(
            f"VerTac alert latency benchmark: {PROBES} limit violations, background "
            f"{BACKGROUND:,} samples/s ({samples_bg:,} samples sent), ingest and alerts running"
        )
        print(f"  alerts raised: {len(latencies)} of {len(sent)}")
        if not latencies:
            await bus.close()
            raise SystemExit("the alert benchmark measured nothing: no alert was raised (see "
                             f"the services' logs under {stack.root})")  # fmt: skip
        if latencies:
            print(
                f"  offending frame published -> alert event on the bus: p50 {statistics.median(latencies):.1f} ms, "
                f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
            )
        print(
            f"  baseline, publish -> JetStream ack of the same frames: p50 {statistics.median(acks):.1f} ms, "
            f"p99 {percentile(acks, 0.99):.1f} ms"
        )
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
