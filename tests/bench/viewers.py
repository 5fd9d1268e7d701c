"""Viewer benchmark (``make bench``): thousands of live WebSocket viewers of the gateway.

Machines are simulated as ``make run`` does (8 sensors at 100 Hz), publishing 50 ms frames so a
viewer can expect 20 updates a second (``VERTAC_GATEWAY_WS_INTERVAL_MS`` = 50, the default). For
1,000 to 10,000 viewers spread over 1 and over 100 streams it prints, per server:
- updates received per viewer and second (median and the slowest 5 %), failed connections;
- latency from a frame's publication (its ``sent_ms``) to its arrival at the viewer, p50/p99;
- server CPU per 1,000 viewers and memory per viewer;
- the CPU of the viewers' own processes, to tell what limited the run.

Servers, each in its own process(es), each run on its own port:
- ``bare``: a bare websocket server (the ``websockets`` library, no compression) pushing the same
  bytes, a message the gateway's own code encoded, to every viewer at 20 Hz: the baseline;
- ``gateway x1`` and ``gateway x2``: the VerTac gateway with 1 and 2 worker processes
  (``VERTAC_GATEWAY_WORKERS``), fed by the frames on NATS.
Viewers are Node.js processes (``tests/bench/node/client.mjs``, 5,000 viewers each) that do the
WebSocket handshake and then only walk frame headers, so they cost far less than the server.
The bare server sends as soon as its 20 Hz tick fires; the gateway sends on its own 50 ms tick, so
its latency includes up to 50 ms of waiting for the next tick.

Environment: VERTAC_BENCH_VIEWERS (e.g. ``1000,2000``), VERTAC_BENCH_STREAMS (``1,100``),
VERTAC_BENCH_SERVERS (``bare,gateway1,gateway2``), VERTAC_BENCH_MEASURE_S (10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from edge.client import Bus
from edge.publisher import frame_message
from edge.simulator import Simulation, build_machine
from schemas.frames import Frame
from services.common.runtime import open_bus
from services.embedded import free_port
from services.gateway.logic import Decimator, envelope
from tests.bench.stack import REPO, Stack, cpu_s, embedded_stack, line, percentile, rss_bytes, tree

NODE_DIR = REPO / "tests" / "bench" / "node"
SENSORS, RATE_HZ, FRAME_MS = 8, 100.0, 50
VIEWERS = [
    int(v) for v in os.environ.get("VERTAC_BENCH_VIEWERS", "1000,2000,5000,10000").split(",")
]
STREAMS = [int(v) for v in os.environ.get("VERTAC_BENCH_STREAMS", "1,100").split(",")]
SERVERS = os.environ.get("VERTAC_BENCH_SERVERS", "bare,gateway1,gateway2").split(",")
MEASURE_S = float(os.environ.get("VERTAC_BENCH_MEASURE_S", "10"))
WARMUP_S = 3.0
PER_CLIENT = 5000
SAMPLES_MAX_BYTES = 512 * 2**20  # the bench publishes for minutes with nothing consuming


def loopback_cost_us(pairs: int = 500, rounds: int = 40, size: int = 1600) -> tuple[float, float]:
    """CPU (user + system) of one small TCP message over loopback on this host, for the sender and
    the receiver, in µs: the kernel's floor under any WebSocket server and any viewer."""
    import resource
    import socket

    listener = socket.create_server(("127.0.0.1", 0), backlog=pairs)
    clients, servers = [], []
    for _ in range(pairs):
        c = socket.create_connection(listener.getsockname())
        c.setblocking(False)
        s, _ = listener.accept()
        for sock in (c, s):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(c)
        servers.append(s)

    def used() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    msg = b"x" * size
    t0 = used()
    for _ in range(rounds):
        for s in servers:
            s.send(msg)
    t1 = used()
    for _ in range(rounds):
        for c in clients:
            with contextlib.suppress(BlockingIOError):
                c.recv(1 << 20)
    t2 = used()
    for sock in (*clients, *servers, listener):
        sock.close()
    n = pairs * rounds
    return 1e6 * (t1 - t0) / n, 1e6 * (t2 - t1) / n


# --- the bare baseline server ------------------------------------------------------------------


def template_message(stream_id: str) -> str:
    """One update as the gateway encodes it: a 50 ms frame decimated and put in the envelope."""
    sim = Simulation(
        build_machine(stream_id=stream_id, sensors=SENSORS, rate_hz=RATE_HZ), time.time_ns()
    )
    decimator = Decimator(stream_id, buckets=10)
    step = FRAME_MS * 1_000_000
    decimator.add(sim.frame(0, sim.start_ns, sim.start_ns + step, time.time_ns()))
    message = decimator.flush()
    assert message is not None
    return envelope(message)


async def bare_server(port: int, streams: int) -> None:
    """A bare websocket server: per stream, the same bytes to all of its viewers at 20 Hz."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    viewers: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        stream_id = ws.request.path.rsplit("/", 1)[-1] if ws.request else ""
        viewers.setdefault(stream_id, set()).add(ws)
        try:
            await ws.wait_closed()
        finally:
            viewers[stream_id].discard(ws)

    head, _, _ = template_message("template").rpartition('"sent_ms":[')
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, backlog=4096):
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + FRAME_MS / 1000, loop.time())
            await asyncio.sleep(due - loop.time())
            for conns in viewers.values():
                if conns:  # a fresh sent_ms: the baseline's latency is measured the same way
                    broadcast(conns, f'{head}"sent_ms":[{time.time() * 1000:.3f}]}}}}')


# --- publishing frames -------------------------------------------------------------------------


async def publish(bus: Bus, stream_ids: list[str], stop: asyncio.Event) -> None:
    """Every stream's 50 ms frame, each 50 ms, stamped with its publication time."""
    now = time.time_ns()
    sims = [Simulation(build_machine(stream_id=s, sensors=SENSORS, rate_hz=RATE_HZ), now)
            for s in stream_ids]  # fmt: skip
    step = FRAME_MS * 1_000_000
    loop = asyncio.get_running_loop()
    due, seq = loop.time(), 0
    while not stop.is_set():
        due = max(due + FRAME_MS / 1000, loop.time())
        await asyncio.sleep(due - loop.time())
        t1 = time.time_ns()
        for sim in sims:
            f = sim.frame(seq, t1 - step, t1)
            subject, payload, headers = frame_message(
                Frame(f.stream_id, seq, f.series, time.time_ns())
            )
            await bus.nc.publish(subject, payload, headers=headers)
        seq += 1


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    viewers: int
    streams: int
    connected: int
    failed: int
    rate_median: float
    rate_p5: float
    p50_ms: float
    p99_ms: float
    server_cpu_per_1k: float  # % of one core per 1,000 viewers
    mem_per_viewer_kb: float
    client_cpu: float  # % of one core, all viewer processes
    errors: dict[str, int]


async def measure(server: str, urls: list[str], viewers: int, streams: int,
                  server_pids: list[int]) -> Result:  # fmt: skip
    """Open ``viewers`` connections over ``urls`` from Node processes, let them settle for
    WARMUP_S, then count and time what they receive for MEASURE_S."""
    n_proc = max(1, math.ceil(viewers / PER_CLIENT))
    shares = [viewers // n_proc + (1 if k < viewers % n_proc else 0) for k in range(n_proc)]
    rss0 = rss_bytes(server_pids)
    procs = []
    for k, share in enumerate(shares):
        opts = {"urls": urls[k % len(urls):] + urls[: k % len(urls)], "viewers": share,
                "connectConcurrency": 100, "measureS": MEASURE_S, "sampleEvery": 10}  # fmt: skip
        procs.append(await asyncio.create_subprocess_exec(
            "node", str(NODE_DIR / "client.mjs"), json.dumps(opts), cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=2**30,
        ))  # fmt: skip
    try:
        await asyncio.gather(*(line(p) for p in procs))
        await asyncio.sleep(WARMUP_S)
        mem = (rss_bytes(server_pids) - rss0) / viewers
        c0, t0 = cpu_s(server_pids), time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outs = await asyncio.gather(*(line(p) for p in procs))
        elapsed = time.perf_counter() - t0
        used = cpu_s(server_pids) - c0
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
    rates = [r for o in outs for r in o["rates"]]
    lat = [x for o in outs for x in o["latencies"]]
    errors: dict[str, int] = {}
    for o in outs:
        for key, v in o["errors"].items():
            errors[key] = errors.get(key, 0) + v
    return Result(
        server, viewers, streams,
        connected=sum(o["connected"] for o in outs), failed=sum(o["failed"] for o in outs),
        rate_median=statistics.median(rates), rate_p5=percentile(rates, 0.05),
        p50_ms=percentile(lat, 0.5) if lat else math.nan,
        p99_ms=percentile(lat, 0.99) if lat else math.nan,
        server_cpu_per_1k=100 * used / elapsed / (viewers / 1000),
        mem_per_viewer_kb=mem / 1024,
        client_cpu=100 * sum(o["cpuS"] for o in outs) / max(o["windowS"] for o in outs),
        errors=errors,
    )  # fmt: skip


async def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    async with httpx.AsyncClient() as client:
        while time.perf_counter() < deadline:
            try:
                if (await client.get(url, timeout=5)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


async def run_server(
    server: str, stack: Stack, streams: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if server == "bare":
        log = (stack.root / f"bare-{port}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "tests.bench.viewers", "bare", str(port), str(streams)],
                                cwd=REPO, stdout=log, stderr=log)  # fmt: skip
        await wait_port(port)
        return proc, port
    workers = server.removeprefix("gateway")
    stack.start("gateway", VERTAC_GATEWAY_PORT=str(port), VERTAC_GATEWAY_WORKERS=workers,
                VERTAC_SAMPLES_MAX_BYTES=str(SAMPLES_MAX_BYTES))  # fmt: skip
    proc = stack.procs.pop()
    await wait_http(f"http://127.0.0.1:{port}/api/health")
    if int(workers) > 1:  # every worker is up: each one answers /api/health with its pid
        pids: set[int] = set()
        deadline = time.perf_counter() + 120
        headers = {"Authorization": f"Bearer {await stack.token('admin')}"}  # pids: signed in
        while len(pids) < int(workers) and time.perf_counter() < deadline:
            async with httpx.AsyncClient(headers=headers) as client:  # any worker may take it
                pids.add((await client.get(f"http://127.0.0.1:{port}/api/health")).json()["pid"])
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


LABEL = {"bare": "bare websocket", "gateway1": "gateway x1", "gateway2": "gateway x2"}


def row(r: Result, base: Result | None) -> str:
    ratio = f"{r.rate_median / base.rate_median:.2f}" if base and base.rate_median else "-"
    return (
        f"| {LABEL.get(r.server, r.server)} | {r.viewers:,} | {r.streams} | {r.connected:,} | {r.failed:,} "
        f"| {r.rate_median:.1f} | {r.rate_p5:.1f} | {ratio} | {r.p50_ms:.0f} | {r.p99_ms:.0f} "
        f"| {r.server_cpu_per_1k:.1f} | {r.mem_per_viewer_kb:.1f} | {r.client_cpu:.0f} |"
    )


async def main() -> None:
    if shutil.which("node") is None:
        sys.exit("the viewer benchmark needs Node.js (>= 20) for its viewers")
    async with embedded_stack("vertac-bench-viewers-") as stack:
        common = stack.common.model_copy(update={"samples_max_bytes": SAMPLES_MAX_BYTES})
        bus = await open_bus(common, "vertac-bench-viewers")
        print(
            f"VerTac viewer benchmark: {SENSORS} sensors x {RATE_HZ:.0f} Hz per stream, {FRAME_MS} ms frames "
            f"(20 updates/s expected), window {MEASURE_S:.0f} s after {WARMUP_S:.0f} s warm-up, "
            f"{os.cpu_count()} cores; viewers: Node.js, {PER_CLIENT:,} per process"
        )
        send_us, recv_us = loopback_cost_us()
        ceiling = (os.cpu_count() or 1) * 1e6 / (send_us + recv_us) / 20
        print(f"  host floor: a 1.6 KB loopback TCP message costs {send_us:.1f} µs to send and "
              f"{recv_us:.1f} µs to receive, so {os.cpu_count()} cores carry at most "
              f"{ceiling:,.0f} viewers at 20 updates/s with nothing else running")  # fmt: skip
        print("| server | viewers | streams | connected | failed | updates/s median | slowest 5 % "
              "| ratio to bare | p50 ms | p99 ms | server CPU %/1k viewers | KB/viewer | viewer CPU % |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        results: list[Result] = []
        token = await stack.token("viewer")
        for streams in STREAMS:
            stream_ids = [f"view-{streams}-{k}" for k in range(streams)]
            halt = asyncio.Event()
            publisher = asyncio.ensure_future(publish(bus, stream_ids, halt))
            for viewers in VIEWERS:
                base = None
                for server in SERVERS:
                    proc, port = await run_server(server, stack, streams)
                    try:
                        urls = [f"ws://127.0.0.1:{port}/api/live/ws/stream/{s}?access_token={token}"
                                for s in stream_ids]  # fmt: skip
                        r = await measure(server, urls, viewers, streams, tree(proc.pid))
                        if not r.connected or not r.rate_median:
                            raise RuntimeError(
                                f"{server}: the viewers measured nothing "
                                f"({r.connected} connected, errors {r.errors})"
                            )
                    finally:
                        stop(proc)
                    base = r if server == "bare" else base
                    results.append(r)
                    print(row(r, base), flush=True)
                    if r.errors:
                        print(f"|   errors: {r.errors} |", flush=True)
            halt.set()
            await publisher
        await bus.close()
        best = [r for r in results if r.server.startswith("gateway") and r.failed == 0
                and r.rate_median >= 15 and r.p99_ms < 250]  # fmt: skip
        for label, pick in (("one process", "gateway1"), ("replicated", "gateway2")):
            held = [r.viewers for r in best if r.server == pick]
            print(
                f"  largest that holds >= 15 updates/s, p99 < 250 ms, {label}: "
                f"{max(held):,} viewers"
                if held
                else f"  {label}: none of the runs held the goal"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["bare"]:
        asyncio.run(bare_server(int(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(main())
