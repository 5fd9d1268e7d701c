"""Historian benchmark (``make bench-historian``, in ``make bench``): raw frames and rollups in
PostgreSQL, against VictoriaMetrics ingesting the same samples in the same run.

- Generates ``VERTAC_BENCH_HISTORIAN_HOURS`` (24) hours of 16 sensors x 1 kHz ending now, as
  1 s frames written by ingest's own store (frames and their 1 s / 1 min rollups in one
  transaction per batch of 16 frames), straight into an embedded PostgreSQL.
- Ingest throughput with rollups on against off: 2 min of frames into a stream each, alternating,
  5 rounds (medians).
- History queries (median of 9): 24 h at 1,000 points, 1 h at 1,000 points, 10 min raw.
- Dropping a day's partition (a day 10 days back with an hour of data).
- Bytes per sample of the raw frames and of the rollups; VictoriaMetrics (Debian's
  ``victoria-metrics``) ingesting 10 min of the same samples by line protocol on
  ``/api/v2/write``: its data folder after a forced merge, and its ingest rate as the anchor.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import zstandard
from psycopg_pool import AsyncConnectionPool

from schemas.frames import Frame, Series
from services.common.db import migrate
from services.embedded import Postgres, free_port, wait_for_port
from services.gateway.history import HistoryQueries
from services.gateway.raw_history import warm_up
from services.ingest.adapters import PgFrameStore
from services.ingest.logic import influx_lines, to_row
from services.ingest.retention import maintain, plan

S = 1_000_000_000
SENSORS, RATE = 16, 1000
HOURS = float(os.environ.get("VERTAC_BENCH_HISTORIAN_HOURS", "24"))
BATCH = 16
ROUNDS = 5


def frame(stream: str, seq: int, t0: int, rng: np.random.Generator) -> Frame:
    """One second of 16 sensors at 1 kHz: smooth signals with noise, as float32 (a DAQ's)."""
    phase = (t0 // S) % 600 / 600 * 2 * np.pi
    x = np.linspace(phase, phase + 2 * np.pi / 600, RATE, endpoint=False)
    return Frame(
        stream,
        seq,
        tuple(
            Series(
                f"s{i}",
                (100 * np.sin(x + i) + rng.normal(0, 0.5, RATE)).astype("f4"),
                t0,
                S // RATE,
            )
            for i in range(SENSORS)
        ),
    )


async def write(
    store: PgFrameStore, stream: str, start_ns: int, seconds: int, rollups: bool
) -> float:
    """Write ``seconds`` of frames; returns samples per second of wall time."""
    rng = np.random.default_rng(7)
    compressor = zstandard.ZstdCompressor(level=3)
    t0 = time.perf_counter()
    for lo in range(0, seconds, BATCH):
        frames = [
            frame(stream, k, start_ns + k * S, rng) for k in range(lo, min(seconds, lo + BATCH))
        ]
        await store.write([to_row(f, compressor) for f in frames], frames if rollups else None)
    return seconds * SENSORS * RATE / (time.perf_counter() - t0)


async def sizes(pool: AsyncConnectionPool) -> dict[str, int]:
    async with pool.connection() as conn:
        out = {}
        for table in ("live_frames", "live_rollup_1s", "live_rollup_1m"):
            cur = await conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = %s::regclass",
                (table,),
            )
            row = await cur.fetchone()
            out[table] = int(row[0]) if row else 0
        return out


def victoria(samples_s: int, start_ns: int) -> tuple[float, int] | None:
    """VictoriaMetrics ingesting ``samples_s`` seconds of the same samples: (samples/s, bytes
    of its data folder after a forced merge); None when it is not installed."""
    binary = shutil.which("victoria-metrics") or (
        "/usr/bin/victoria-metrics" if Path("/usr/bin/victoria-metrics").exists() else None
    )
    if binary is None:
        return None
    data = Path(tempfile.mkdtemp(prefix="vertac-bench-vm-"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}", "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 30, None)
        rng = np.random.default_rng(7)
        bodies = [
            zlib.compress(influx_lines(frame("vm", k, start_ns + k * S, rng), time.time_ns()))
            for k in range(samples_s)
        ]
        t0 = time.perf_counter()
        for body in bodies:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v2/write?precision=ns", data=body,
                headers={"Content-Encoding": "deflate"}, method="POST",
            )  # fmt: skip
            urllib.request.urlopen(req, timeout=60).read()
        rate = samples_s * SENSORS * RATE / (time.perf_counter() - t0)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/force_flush", timeout=60).read()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/force_merge", timeout=600).read()
        time.sleep(5)  # the merge runs in the background
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        return rate, size
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vertac-bench-historian-"))
    pg = Postgres(root / "pg", port=free_port()).start()
    try:
        await migrate(pg.url)
        pool = AsyncConnectionPool(pg.url, open=False, max_size=4)
        await pool.open()
        store = PgFrameStore(pool)
        now = time.time_ns() // S * S
        seconds = int(HOURS * 3600)
        day_start = now - seconds * S
        print(f"VerTac historian benchmark: {HOURS:g} h of {SENSORS} sensors x {RATE} Hz "
              f"({seconds * SENSORS * RATE / 1e9:.2f} billion samples), embedded PostgreSQL")  # fmt: skip
        rate = await write(store, "rig", day_start, seconds, True)
        print(f"  generated and written with rollups: {rate / 1e6:.2f} M samples/s")
        ons, offs = [], []
        for k in range(ROUNDS):  # alternating, so that a busy moment of the box hits both
            t = now - 3000 * S + k * 120 * S
            ons.append(await write(store, f"ratio-on-{k}", t, 120, True))
            offs.append(await write(store, f"ratio-off-{k}", t, 120, False))
        on, off = statistics.median(ons), statistics.median(offs)
        ratio = statistics.median(a / b for a, b in zip(ons, offs, strict=True))
        print(f"  ingest, rollups on {on / 1e6:.2f} M samples/s, off {off / 1e6:.2f} M samples/s "
              f"(median of {ROUNDS} alternating rounds of 2 min; ratio {ratio:.2f})")  # fmt: skip
        warm_up()  # as the gateway does at start
        history = HistoryQueries(pool)
        end = datetime.fromtimestamp(now / S, UTC)
        for label, span, points in (
            ("24 h at 1,000 points", timedelta(hours=min(24, HOURS)), 1000),
            ("1 h at 1,000 points", timedelta(hours=1), 1000),
            ("10 min raw at 1,000 points", timedelta(minutes=10), 1000),
        ):
            took, res = [], ""
            for _ in range(9):
                t0 = time.perf_counter()
                h = await history.samples("rig", end - span, end, points, None)
                took.append(time.perf_counter() - t0)
                res = h.resolution
            print(f"  history {label}: median {statistics.median(took) * 1000:.0f} ms "
                  f"(from {res}, {len(h.sensors)} sensors)")  # fmt: skip
        old = now - 10 * 86400 * S
        await write(store, "old", old, 3600, True)
        t0 = time.perf_counter()
        dropped = await maintain(pool, plan(7, 90))
        print(f"  retention: dropped {len(dropped)} partition(s) of a day 10 days back "
              f"(an hour of data) in {(time.perf_counter() - t0) * 1000:.0f} ms")  # fmt: skip
        size = await sizes(pool)
        total = (seconds + ROUNDS * 240) * SENSORS * RATE
        rollup = size["live_rollup_1s"] + size["live_rollup_1m"]
        print(f"  bytes per sample: raw {size['live_frames'] / total:.2f}, rollups "
              f"{rollup / total:.3f} ({rollup / 1e6:.0f} MB for {total / 1e9:.2f} billion samples)")  # fmt: skip
        await pool.close()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    vm = victoria(600, now - 3600 * S)
    if vm is None:
        print("  VictoriaMetrics: not installed (apt-get install victoria-metrics)")
    else:
        vm_rate, vm_bytes = vm
        print(f"  VictoriaMetrics, the same 10 min by line protocol: {vm_rate / 1e6:.2f} M samples/s, "
              f"{vm_bytes / (600 * SENSORS * RATE):.2f} bytes per sample after a forced merge; "
              f"ours {rate / vm_rate:.2f}x its ingest rate")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
