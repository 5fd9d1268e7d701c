"""Plant benchmark (``make bench``): a whole plant with every service doing its real work.

Each simulated machine has 16 sensors at 100 Hz and a digital ``cycle_active`` input, publishes
100 ms frames (the edge default) and works in 30 s cycles that the cycles service detects from that
signal (trigger ``signal``). Each machine has two alert rules (a pressure limit crossed in every
cycle, a temperature limit never crossed) and gets an analysis per cycle against a reference the
analysis service builds from its first 3 cycles (``VERTAC_ANALYSIS_AUTO_REFERENCE_CYCLES``, the
default). 50 WebSocket viewers watch the first 50 machines. ingest, cycles, analysis, alerts and
the gateway run as processes with default settings, against embedded nats-server and PostgreSQL.

Every machine first runs until its reference exists (warm-up, not measured); then, for the window,
it prints per plant size:
- samples/s published and persisted;
- every consumer's lag (messages pending or unacknowledged, sampled each second; for the samples
  stream also in seconds of frames), p99 and max;
- cycle end (publication of the frame holding the falling edge) -> analysis result, p50/p99;
- frame (publication of the frame holding the first violating sample) -> alert event, p50/p99;
- viewers' updates/s and publish -> screen latency;
- CPU of every service, of nats-server, of PostgreSQL and of the publisher, in % of one core.
- CPU per frame of every service, nats-server and PostgreSQL in microseconds, against a baseline
  measured in the same run: raw JetStream publish -> fetch -> ack of the same frames at the same
  rate (``tests/bench/rawjs.py``), nats-server and that consumer;
- a flame graph of every service (py-spy, over 20 s after the window so that its sampling does not
  count in the figures; ``VERTAC_BENCH_PROFILE=0`` leaves them out) and a plot of machines against
  lag, latency and CPU (``plant.png``), under ``VERTAC_BENCH_OUT``.
A plant holds when the samples stream's lag p99 < 2 s, cycle end -> analysis p99 < 1 s, frame ->
alert p99 < 250 ms and the viewers get >= 90 % of their update rate; the verdict names the largest
plant that holds. A figure that could not be measured (no viewer connected, no analysis, no alert)
stops the benchmark with the reason instead of printing a number.

Environment: VERTAC_BENCH_MACHINES (``10,50,100,200``), VERTAC_BENCH_PLANT_S (window, 60),
VERTAC_BENCH_OUT (``.vertac/bench``), VERTAC_BENCH_PROFILE (1).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psycopg

from edge.client import Bus
from edge.publisher import frame_message
from edge.simulator import Simulation, build_machine
from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, Frame, Series
from schemas.messages import (
    AlertChanged,
    AlertRule,
    AnalysisCompleted,
    CycleConfig,
    CycleStateChanged,
)
from services.common.runtime import open_bus
from services.embedded import free_port
from tests.bench.stack import REPO, Stack, cpu_s, embedded_stack, line, percentile, tree
from tests.bench.viewers import NODE_DIR

MACHINES = [int(v) for v in os.environ.get("VERTAC_BENCH_MACHINES", "10,50,100,200").split(",")]
WINDOW_S = float(os.environ.get("VERTAC_BENCH_PLANT_S", "60"))
OUT = Path(os.environ.get("VERTAC_BENCH_OUT", str(REPO / ".vertac" / "bench")))
PROFILE = os.environ.get("VERTAC_BENCH_PROFILE", "1") != "0"
PROFILE_FORMAT = os.environ.get("VERTAC_BENCH_PROFILE_FORMAT", "flamegraph")  # or raw, speedscope
PROFILE_S = 20  # after the window: py-spy's own CPU must not count in the figures
BASELINE_S = 20.0
SUFFIX = {"flamegraph": "svg", "speedscope": "json"}
SENSORS, RATE_HZ, FRAME_MS, CYCLE_S = 16, 100, 100, 30.0
WS_INTERVAL_MS = 50  # the gateway's default
UPDATES_PER_S = min(1000 / WS_INTERVAL_MS, 1000 / FRAME_MS)  # a viewer gets no more than frames
VIEWERS = 50
SERVICES = ("ingest", "cycles", "analysis", "alerts", "gateway")
NS = 1_000_000_000


class Machine:
    """One machine's 30 s cycle, generated once; frames are slices of it, stamped as they go out."""

    def __init__(self, stream_id: str, phase: int) -> None:
        model = build_machine(stream_id=stream_id, sensors=SENSORS, rate_hz=RATE_HZ,
                              slow_rate_hz=RATE_HZ, cycle_s=CYCLE_S, active_signal=True,
                              seed=phase)  # fmt: skip
        t0 = 1_700_000_000 * NS
        whole = Simulation(model, t0).frame(0, t0, t0 + int(CYCLE_S * NS))
        self.stream_id = stream_id
        self.sensors = [(s.sensor_id, s.values) for s in whole.series]
        self.per_frame = int(RATE_HZ * FRAME_MS / 1000)
        self.frames_per_cycle = int(CYCLE_S * 1000 / FRAME_MS)
        self.phase = phase % self.frames_per_cycle
        self.seq = 0
        self.ends: list[int] = []  # data end (ns) of every frame sent, and its publication time
        self.sent: list[int] = []
        self._encoded: dict[int, tuple[bytes, dict[str, Any], bytes]] = {}  # magic, header, values

    def frame(self, end_ns: int) -> Frame:
        k = (self.seq + self.phase) % self.frames_per_cycle
        lo, hi = k * self.per_frame, (k + 1) * self.per_frame
        period = NS // RATE_HZ
        start = end_ns - self.per_frame * period
        series = tuple(Series(sid, values[lo:hi], start, period) for sid, values in self.sensors)
        frame = Frame(self.stream_id, self.seq, series, time.time_ns())
        self.seq += 1
        self.ends.append(end_ns)
        self.sent.append(frame.sent_ns)
        return frame

    def message(self, end_ns: int) -> tuple[str, bytes, dict[str, str]]:
        """The next frame as published. The values of a slot of the cycle repeat every cycle,
        so their encoded bytes are made once per slot, and only the header (seq, times) for
        each frame: the machines of a plant encode on their own hosts, and the load generator
        must not take the cores it measures (the edge benchmark measures the encoding)."""
        k = (self.seq + self.phase) % self.frames_per_cycle
        frame = self.frame(end_ns)
        cached = self._encoded.get(k)
        if cached is None:
            subject, payload, headers = frame_message(frame)
            (length,) = struct.unpack_from("<I", payload, 4)
            header = msgpack.unpackb(payload[8 : 8 + length])
            self._encoded[k] = (payload[:4], header, payload[8 + length :])
            return subject, payload, headers
        magic, header, body = cached
        start = frame.series[0].t0_ns
        times = (
            {"t0": start}  # a compact frame: one clock for all
            if "sensors" not in header
            else {"sensors": [{**meta, "t0": start} for meta in header["sensors"]]}
        )
        packed = msgpack.packb({**header, "seq": frame.seq, "sent_ns": frame.sent_ns, **times})
        headers = {
            subjects.HEADER_CONTENT_TYPE: CONTENT_TYPE_BINARY,
            subjects.HEADER_MSG_ID: subjects.dedup_id(frame.stream_id, frame.seq),
        }
        payload = b"".join((magic, struct.pack("<I", len(packed)), packed, body))
        return subjects.samples(frame.stream_id), payload, headers

    def sent_of(self, data_ns: int) -> int | None:
        """Publication time of the frame that holds the sample at ``data_ns``."""
        i = bisect.bisect_right(self.ends, data_ns)
        return self.sent[i] if i < len(self.sent) else None


async def publish(
    bus: Bus,
    machines: list[Machine],
    stop: asyncio.Event,
    stats: dict[str, float],
    prefix: str = "",
) -> None:
    """Every machine's frame each 100 ms, publications spread over the period."""
    loop = asyncio.get_running_loop()
    period = FRAME_MS / 1000
    due = loop.time()
    end_ns = time.time_ns() // (FRAME_MS * 1_000_000) * (FRAME_MS * 1_000_000)
    pending: list[asyncio.Future[Any]] = []
    while not stop.is_set():
        due = max(due + period, loop.time())
        await asyncio.sleep(due - loop.time())
        end_ns += FRAME_MS * 1_000_000
        for m in machines:
            subject, payload, headers = m.message(end_ns)
            if prefix:
                subject = f"{prefix}.{m.stream_id}"
            pending.append(
                await bus.js.publish_async(subject, payload, headers=headers, wait_stall=30)
            )
            stats["samples"] += SENSORS * m.per_frame + m.per_frame
        stats["frames"] += len(machines)
        if len(pending) > 4 * len(machines):
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


@dataclass
class Observed:
    analysis_ms: list[float] = field(default_factory=list)  # falling-edge frame -> analysis
    completed_to_analysis_ms: list[float] = field(default_factory=list)
    alert_ms: list[float] = field(default_factory=list)
    references: set[str] = field(default_factory=set)
    completed: dict[str, tuple[str, float, int]] = field(default_factory=dict)
    measuring: bool = False


async def watch(bus: Bus, by_id: dict[str, Machine], seen: Observed) -> list[Any]:
    async def on_cycle(msg: Any) -> None:
        e = CycleStateChanged.model_validate_json(msg.data)
        if e.state == "completed" and e.ended_at is not None:
            end_ns = int(e.ended_at.timestamp() * 1e9)
            seen.completed[e.cycle_id] = (e.stream_id, time.time() * 1000, end_ns)

    async def on_analysis(msg: Any) -> None:
        now = time.time() * 1000
        r = AnalysisCompleted.model_validate_json(msg.data)
        seen.references.add(r.stream_id)
        got = seen.completed.pop(r.cycle_id, None)
        if not seen.measuring or got is None:
            return
        stream_id, observed_ms, end_ns = got
        sent = by_id[stream_id].sent_of(end_ns)
        seen.completed_to_analysis_ms.append(now - observed_ms)
        if sent is not None:
            seen.analysis_ms.append(now - sent / 1e6)

    async def on_alert(msg: Any) -> None:
        now = time.time() * 1000
        a = AlertChanged.model_validate_json(msg.data)
        if not seen.measuring or a.state != "raised" or a.stream_id not in by_id:
            return
        sent = by_id[a.stream_id].sent_of(int(a.at.timestamp() * 1e9))
        if sent is not None:
            seen.alert_ms.append(now - sent / 1e6)

    p = subjects.PREFIX
    return [
        await bus.nc.subscribe(f"{p}.cycles.*.completed", cb=on_cycle),
        await bus.nc.subscribe(f"{p}.analysis.*", cb=on_analysis),
        await bus.nc.subscribe(f"{p}.alerts.*.*", cb=on_alert),
    ]


async def lags(bus: Bus) -> dict[str, int]:
    out = {}
    for stream in await bus.js.streams_info():
        for info in await bus.js.consumers_info(stream.config.name):
            if not info.config.durable_name:
                continue  # a short-lived reader (a recording read back), not a service
            out[f"{stream.config.name}/{info.name}"] = (info.num_pending or 0) + (
                info.num_ack_pending or 0
            )
    return out


async def persisted(url: str, prefix: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT coalesce(sum(samples), 0) FROM live_stream_stats WHERE stream_id LIKE %s",
                                 (prefix + "%",))  # fmt: skip
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def server_pids(stack: Stack) -> dict[str, list[int]]:
    """Process trees of the services, nats-server, PostgreSQL (found by their data folders under
    the stack's root) and this process (the publisher)."""
    out = {name: tree(p.pid) for name, p in zip(SERVICES, stack.procs, strict=False)}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if any(str(stack.root).encode() in a for a in argv) and not argv[0].endswith(b"python"):
                name = Path(argv[0].decode()).name
                if name in ("nats-server", "postgres"):
                    out.setdefault(name, []).extend(tree(int(d.name)))
    out["publisher"] = [os.getpid()]
    return out


@dataclass
class PlantResult:
    machines: int
    published: float
    stored: float
    frames: float  # frames published in the window
    lag: dict[str, tuple[float, float]]
    samples_lag_s: tuple[float, float]
    analysis: tuple[float, float, int]
    completed_to_analysis: tuple[float, float]
    alert: tuple[float, float, int]
    viewers: tuple[float, float, float]
    cpu: dict[str, float]  # % of one core
    baseline_us: float  # raw JetStream publish -> fetch -> ack, CPU µs per frame

    def us_per_frame(self, name: str) -> float:
        return self.cpu[name] / 100 * WINDOW_S * 1e6 / self.frames if self.frames else math.nan

    @property
    def pipeline_us(self) -> float:
        """CPU per frame of everything that is not the publisher (services, bus, database)."""
        return sum(self.us_per_frame(k) for k in self.cpu if k != "publisher")

    @property
    def misses(self) -> list[str]:
        out = []
        if not self.samples_lag_s[0] < 2:
            out.append(f"samples lag p99 {self.samples_lag_s[0]:.2f} s >= 2 s")
        if not self.analysis[1] < 1000:
            out.append(f"cycle end -> analysis p99 {self.analysis[1]:.0f} ms >= 1000 ms")
        if not self.alert[1] < 250:
            out.append(f"frame -> alert p99 {self.alert[1]:.0f} ms >= 250 ms")
        if not self.viewers[0] >= 0.9 * UPDATES_PER_S:
            out.append(f"viewers {self.viewers[0]:.1f} updates/s < 90 % of {UPDATES_PER_S:g}")
        return out


def pct(xs: list[float], q: float) -> float:
    return percentile(xs, q) if xs else float("nan")


class NotMeasured(RuntimeError):
    """A figure the benchmark could not measure: it stops with the reason, never a number."""


async def raw_baseline(stack: Stack, machines: list[Machine]) -> float:
    """CPU µs per frame of nats-server and a fetch-and-ack consumer for the same frames at the
    same rate, on a stream of their own, before any service runs."""
    bus = await open_bus(stack.common, "vertac-bench-raw")
    stream, subject = "BENCHRAW", "benchraw.>"
    await bus.js.add_stream(name=stream, subjects=[subject], max_bytes=2 * 1024**3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.rawjs", stack.common.nats_url, stream, subject,
        cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await line_text(proc)
    pids = [proc.pid, *server_pids(stack).get("nats-server", [])]
    stop, counts = asyncio.Event(), {"samples": 0.0, "frames": 0.0}
    twins = [Machine(m.stream_id, m.phase) for m in machines]
    task = asyncio.ensure_future(publish(bus, twins, stop, counts, prefix="benchraw"))
    await asyncio.sleep(2)
    c0, f0 = cpu_s(pids), counts["frames"]
    await asyncio.sleep(BASELINE_S)
    used, frames = cpu_s(pids) - c0, counts["frames"] - f0
    stop.set()
    await task
    assert proc.stdin is not None
    proc.stdin.close()
    acked = int(await line_text(proc))
    await proc.wait()
    await bus.js.delete_stream(stream)
    await bus.close()
    if not acked or not frames:
        raise NotMeasured(f"the raw JetStream baseline moved no frame (acked {acked})")
    return used * 1e6 / frames


async def line_text(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    if not raw:
        raise NotMeasured(f"{proc} exited before answering")
    return raw.decode().strip()


def profile(pids: dict[str, list[int]], n: int) -> list[subprocess.Popen[bytes]]:
    """A py-spy flame graph of every service over ``PROFILE_S`` (``flame-<service>-<n>.svg``)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not PROFILE or not Path(spy).exists():
        return []
    OUT.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--nonblocking",
                "--subprocesses",  # the gateway's workers
                "-r",
                "50",
                "-d",
                str(PROFILE_S),
                "-f",
                PROFILE_FORMAT,
                "-p",
                str(pids[name][0]),
                "-o",
                str(OUT / f"flame-{name}-{n}.{SUFFIX.get(PROFILE_FORMAT, 'txt')}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in SERVICES
    ]


async def run_plant(n: int) -> PlantResult:
    async with embedded_stack(f"vertac-bench-plant-{n}-") as stack:
        machines = [Machine(f"plant-{k:03d}", k * 7) for k in range(n)]
        baseline_us = await raw_baseline(stack, machines)
        token = await stack.token("viewer")
        bus = await open_bus(stack.common, "vertac-bench-plant")
        by_id = {m.stream_id: m for m in machines}
        cfg_kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
        rules_kv = await bus.js.key_value(subjects.KV_ALERT_RULES)
        config = CycleConfig(
            trigger="signal", signal_sensor="cycle_active", start_above=0.5, stop_below=0.5
        )
        for m in machines:
            await cfg_kv.put(m.stream_id, config.model_dump_json().encode())
            for rule in (
                AlertRule(
                    rule_id="pressure-high",
                    stream_id=m.stream_id,
                    kind="limit",
                    sensor_id="pressure_1",
                    hi=140,
                ),
                AlertRule(
                    rule_id="oil-cold",
                    stream_id=m.stream_id,
                    kind="limit",
                    sensor_id="temperature_1",
                    lo=-50,
                ),
            ):
                await rules_kv.put(f"{m.stream_id}.{rule.rule_id}", rule.model_dump_json().encode())
        port = free_port()
        stack.start(*SERVICES, VERTAC_GATEWAY_PORT=str(port))
        seen = Observed()
        subs = await watch(bus, by_id, seen)
        stop = asyncio.Event()
        counts = {"samples": 0.0, "frames": 0.0}
        publisher = asyncio.ensure_future(publish(bus, machines, stop, counts))
        spies: list[subprocess.Popen[bytes]] = []
        try:
            # warm-up: every machine has done its first cycles and has its reference
            deadline = time.monotonic() + 5 * CYCLE_S + 60
            while len(seen.references) < n and time.monotonic() < deadline and not publisher.done():
                await asyncio.sleep(1)
            if publisher.done():
                publisher.result()
            warm = len(seen.references)
            viewers = await start_viewers(port, [m.stream_id for m in machines[:VIEWERS]], token)
            pids = server_pids(stack)
            cpu0 = {k: cpu_s(v) for k, v in pids.items()}
            stored0, samples0, frames0, t0 = (
                await persisted(stack.common.database_url, "plant-"),
                counts["samples"],
                counts["frames"],
                time.monotonic(),
            )
            seen.measuring = True
            for p in viewers:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            series: dict[str, list[int]] = defaultdict(list)
            while time.monotonic() - t0 < WINDOW_S:
                await asyncio.sleep(1)
                for k, v in (await lags(bus)).items():
                    series[k].append(v)
            elapsed = time.monotonic() - t0
            seen.measuring = False
            cpu = {k: 100 * (cpu_s(v) - cpu0[k]) / elapsed for k, v in pids.items()}
            published = (counts["samples"] - samples0) / elapsed
            frames = (counts["frames"] - frames0) * WINDOW_S / elapsed
            stored = (await persisted(stack.common.database_url, "plant-") - stored0) / elapsed
            outs = [await line(p) for p in viewers]
            spies = profile(pids, n)  # the plant still running, after the measured window
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
                    await asyncio.to_thread(spy.wait, PROFILE_S + 30)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await publisher
            for spy in spies:
                if spy.poll() is None:
                    spy.kill()
            for s in subs:
                await s.unsubscribe()
            await bus.close()
        frames_per_s = n * 1000 / FRAME_MS
        samples_lag = [
            v / frames_per_s
            for k, vs in series.items()
            if k.startswith(subjects.SAMPLES.name)
            for v in vs
        ]
        rates = [r for o in outs for r in o["rates"]]
        vlat = [x for o in outs for x in o["latencies"]]
        if warm < n:
            print(f"  ({n} machines: {warm} had a reference when the window began)")
        closed = sum(o.get("closedEarly", 0) for o in outs)
        if not rates or not vlat or closed:
            raise NotMeasured(
                f"{n} machines: the viewers measured nothing ({len(vlat)} latencies, "
                f"{closed} closed early, errors {[o.get('errors') for o in outs]})"
            )
        if not seen.analysis_ms or not seen.alert_ms:
            raise NotMeasured(
                f"{n} machines: {len(seen.analysis_ms)} analyses and {len(seen.alert_ms)} alerts "
                "in the window; see the services' logs under " + str(stack.root)
            )
        return PlantResult(
            n, published, stored, frames,
            lag={k: (pct([float(x) for x in v], 0.99), float(max(v))) for k, v in sorted(series.items())},
            samples_lag_s=(pct(samples_lag, 0.99), max(samples_lag, default=float("nan"))),
            analysis=(pct(seen.analysis_ms, 0.5), pct(seen.analysis_ms, 0.99), len(seen.analysis_ms)),
            completed_to_analysis=(pct(seen.completed_to_analysis_ms, 0.5), pct(seen.completed_to_analysis_ms, 0.99)),
            alert=(pct(seen.alert_ms, 0.5), pct(seen.alert_ms, 0.99), len(seen.alert_ms)),
            viewers=(statistics.median(rates), pct(vlat, 0.5), pct(vlat, 0.99)),
            cpu=cpu, baseline_us=baseline_us,
        )  # fmt: skip


async def start_viewers(
    port: int, stream_ids: list[str], token: str
) -> list[asyncio.subprocess.Process]:
    urls = [
        f"ws://127.0.0.1:{port}/api/live/ws/stream/{s}?access_token={token}" for s in stream_ids
    ]
    opts = {"urls": urls, "viewers": VIEWERS, "connectConcurrency": 10, "measureS": WINDOW_S,
            "sampleEvery": 1}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "client.mjs"), json.dumps(opts), cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=2**30,
    )  # fmt: skip
    hello = await line(proc)
    if hello["connected"] < VIEWERS:
        proc.kill()
        raise NotMeasured(f"only {hello['connected']} of {VIEWERS} viewers connected")
    return [proc]


def report(r: PlantResult) -> None:
    print(f"\n### {r.machines} machines x {SENSORS + 1} signals x {RATE_HZ} Hz "
          f"({r.machines * (SENSORS + 1) * RATE_HZ:,} samples/s offered), window {WINDOW_S:.0f} s")  # fmt: skip
    print(f"  samples/s published {r.published:,.0f}, persisted {r.stored:,.0f}")
    print(f"  samples-stream lag: p99 {r.samples_lag_s[0]:.2f} s, max {r.samples_lag_s[1]:.2f} s")
    print("  | consumer | lag p99 (msgs) | lag max (msgs) |\n  | --- | --- | --- |")
    for k, (p99, mx) in r.lag.items():
        print(f"  | {k} | {p99:,.0f} | {mx:,.0f} |")
    print(f"  cycle end (frame published) -> analysis result: p50 {r.analysis[0]:.0f} ms, "
          f"p99 {r.analysis[1]:.0f} ms ({r.analysis[2]} analyses); completed event -> analysis: "
          f"p50 {r.completed_to_analysis[0]:.0f} ms, p99 {r.completed_to_analysis[1]:.0f} ms")  # fmt: skip
    print(
        f"  frame -> alert event: p50 {r.alert[0]:.0f} ms, p99 {r.alert[1]:.0f} ms ({r.alert[2]} raised)"
    )
    print(f"  {VIEWERS} viewers: {r.viewers[0]:.1f} updates/s median (of {UPDATES_PER_S:g}), "
          f"publish -> receive p50 {r.viewers[1]:.0f} ms, p99 {r.viewers[2]:.0f} ms")  # fmt: skip
    print("  | process | CPU % of one core | CPU µs per frame |\n  | --- | --- | --- |")
    for k, v in r.cpu.items():
        print(f"  | {k} | {v:.0f} | {r.us_per_frame(k):,.0f} |")
    print(f"  pipeline (all but the publisher): {r.pipeline_us:,.0f} µs per frame; raw JetStream "
          f"publish -> fetch -> ack: {r.baseline_us:,.0f} µs per frame; ratio "
          f"{r.pipeline_us / r.baseline_us:.1f}")  # fmt: skip
    total, cores = sum(r.cpu.values()), os.cpu_count() or 1
    top = max(r.cpu, key=lambda k: r.cpu[k])
    print(f"  what limits it: {total:.0f} % of {cores * 100} % CPU in use"
          f"{' (the host is saturated)' if total > 85 * cores else ''}; most: {top}")  # fmt: skip
    print(f"  holds: {'yes' if not r.misses else 'no (' + '; '.join(r.misses) + ')'}")


def plot(results: list[PlantResult]) -> Path:
    """Machines against lag, latency and CPU, one panel each (``plant.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.machines for r in results]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    a.plot(xs, [r.samples_lag_s[0] for r in results], "o-", label="samples lag p99")
    a.axhline(2, ls="--", c="grey", label="goal")
    a.set(xlabel="machines", ylabel="s", title="Samples stream lag")
    b.plot(xs, [r.analysis[1] for r in results], "o-", label="cycle end -> analysis p99")
    b.plot(xs, [r.alert[1] for r in results], "s-", label="frame -> alert p99")
    b.plot(xs, [r.viewers[2] for r in results], "^-", label="publish -> viewer p99")
    b.set(xlabel="machines", ylabel="ms", title="Latency", yscale="log")
    for name in [*SERVICES, "nats-server", "postgres"]:
        c.plot(xs, [r.cpu.get(name, 0) for r in results], "o-", label=name)
    c.plot(xs, [sum(r.cpu.values()) for r in results], "k.-", label="all")
    c.axhline(100 * (os.cpu_count() or 1), ls="--", c="grey")
    c.set(xlabel="machines", ylabel="% of one core", title="CPU")
    for ax in (a, b, c):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "plant.png"
    fig.savefig(path, dpi=110)
    return path


async def main() -> None:
    print(f"VerTac plant benchmark: machines {MACHINES}, {SENSORS} sensors + cycle_active at {RATE_HZ} Hz, "
          f"{FRAME_MS} ms frames, {CYCLE_S:.0f} s cycles, 2 alert rules and an analysis per cycle, "
          f"{VIEWERS} viewers, {os.cpu_count()} cores")  # fmt: skip
    results = []
    for n in MACHINES:
        r = await run_plant(n)
        report(r)
        results.append(r)
    held = [r.machines for r in results if not r.misses]
    flames = f"{OUT}/flame-*.{SUFFIX.get(PROFILE_FORMAT, 'txt')}"
    print(f"\n  plot: {plot(results)}" + (f"; flame graphs: {flames}" if PROFILE else ""))
    print("  largest plant that holds (lag, analysis, alert, viewers): "
          + (f"{max(held)} machines" if held else "none of the sizes run"))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
