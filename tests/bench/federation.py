"""Sites and central benchmark (``make bench``): how fast central catches up after a link outage,
and how late a site's frame reaches a viewer at central.

One site and one central on this machine: two nats-servers (JetStream domains ``north`` and
``central``), the site a leaf node of central through a TCP link the benchmark cuts, and at
central a PostgreSQL, its ingest service and its gateway (processes, default settings,
``VERTAC_SITES=north``), on a closed bus as ``vertac central`` runs it: each service and the
site's leaf node sign in as their own users, with their own permissions. The site's machines publish frames of 16 sensors at 100 Hz, 100 ms each
(160 samples), straight into the site's JetStream as edges do.

1. **Catch-up.** With the link cut, the site's machines publish ``VERTAC_BENCH_FED_FRAMES`` frames
   (default 10,000: 1.6 M samples, 100 s of 10 machines). The link comes back; printed:
   how long until central's bus had the first and every one of them, and until central's ingest
   had stored them all, in samples/s, from the moment the link returned and from the first
   arrival (nats-server retries a source on an interval of its own, which the first excludes).
   Also printed: the bytes a frame's digest takes over the link against the whole frame's, and
   the CPU a site's ingest spends making one.
2. **Latency.** A viewer at central watches a site's stream live while one machine publishes 10
   frames/s for ``VERTAC_BENCH_FED_MEASURE_S`` seconds (10). Printed: from a frame's
   publication at the site (its ``sent_ms``) to its arrival at the viewer's WebSocket, p50 and
   p99; and, as the baseline of the same run, the same for a stream of central's own machine,
   published at central (the gateway's 50 ms tick is in both).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import nats
import psycopg
import websockets

from edge.publisher import frame_message
from edge.simulator import Simulation, build_machine
from schemas.frames import Frame, decode_binary
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import migrate
from services.embedded import NatsServer, Postgres, free_port
from services.federation import CENTRAL_DOMAIN, SiteLink, link_site, site_leaf_remote, site_stream
from services.ingest.logic import digest
from services.natsauth import ADMIN, BusUsers, url_for
from tests.bench.stack import Stack, percentile
from tests.link import Link

SITE = "north"
MACHINES = 10
SENSORS, RATE_HZ, FRAME_MS = 16, 100.0, 100
FRAMES = int(os.environ.get("VERTAC_BENCH_FED_FRAMES", "10000"))
MEASURE_S = float(os.environ.get("VERTAC_BENCH_FED_MEASURE_S", "10"))
NS = 1_000_000_000
SENT: dict[str, int] = {}  # samples of the frames made, by stream


def machine_frames(stream_id: str, n: int, t0: int) -> list[tuple[str, bytes, dict[str, str]]]:
    model = build_machine(stream_id=stream_id, sensors=SENSORS, rate_hz=RATE_HZ, cycle_s=30,
                          active_signal=False)  # fmt: skip
    sim, step = Simulation(model, t0), FRAME_MS * 1_000_000
    out = []
    for i in range(n):
        series = sim.frame(i, t0 + i * step, t0 + (i + 1) * step).series
        out.append(frame_message(Frame(stream_id, i, series, time.time_ns())))
        SENT[stream_id] = SENT.get(stream_id, 0) + sum(x.n for x in series)
    return out


async def stored(url: str, prefix: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(n_samples), 0) FROM live_frames WHERE stream_id LIKE %s",
            (f"{prefix}%",),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def until(check, timeout: float, every: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    """Wait for ``check()``; returns the monotonic time it first held (fails loudly after
    ``timeout``: a figure that was not measured is not printed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(every)
    raise RuntimeError(f"not measured: {check.__name__} did not hold within {timeout:.0f} s")


async def viewer_latencies(base: str, token: str, stream_id: str, publish) -> list[float]:  # type: ignore[no-untyped-def]
    """ms from each frame's ``sent_ms`` to its arrival at a WebSocket viewer of ``stream_id``
    while ``publish()`` runs."""
    got: list[float] = []
    ready = asyncio.Event()

    async def listen() -> None:
        url = base.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
        async with websockets.connect(
            url, max_size=None, additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            async for text in ws:
                now_ms = time.time() * 1000
                m = json.loads(text)
                if m["type"] == "ready":
                    ready.set()
                elif m["type"] == "samples":
                    got.extend(now_ms - s for s in m["data"].get("sent_ms", []))

    listener = asyncio.ensure_future(listen())
    await asyncio.wait_for(ready.wait(), 30)
    await publish()
    await asyncio.sleep(1.0)  # the last frames' update
    listener.cancel()
    if len(got) < MEASURE_S * 5:
        raise RuntimeError(f"not measured: the viewer of {stream_id} got {len(got)} frames")
    return got


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vertac-bench-fed-"))
    # central as `vertac central` runs it: a closed bus, the site signed in as its own user
    users = BusUsers(root / "nats.secrets", root / "nats.conf")
    passwords = users.ensure(sites=(SITE,))
    central = NatsServer(root / "central", port=free_port(), monitor_port=free_port(),
                         domain=CENTRAL_DOMAIN, leaf_port=free_port(),
                         config=users.config_file).start()  # fmt: skip
    assert central.leaf_port is not None
    link = await Link(central.leaf_port).start()
    remote = site_leaf_remote(users.leaf_users.url(SITE, "127.0.0.1", link.port))
    site = NatsServer(root / SITE, port=free_port(), monitor_port=free_port(), domain=SITE,
                      leaf_remotes=(remote,)).start()  # fmt: skip
    pg = Postgres(root / "pg", port=free_port()).start()
    await migrate(pg.url)

    def as_user(user: str) -> str:
        return url_for(central.url, user, passwords[user])

    common = CommonSettings(nats_url=as_user(ADMIN), database_url=pg.url, sites=SITE)
    stack = Stack(root, common)
    cnc, snc = await nats.connect(as_user(ADMIN)), await nats.connect(site.url)
    cjs, sjs = cnc.jetstream(timeout=30), snc.jetstream(timeout=30)
    try:
        await init_bus(cjs, common)
        await link_site(cjs, SiteLink(SITE))
        await init_bus(sjs, CommonSettings(nats_url=site.url, site=SITE))
        port = free_port()
        stack.start("ingest", VERTAC_SITES=SITE, VERTAC_NATS_URL=as_user("ingest"))
        stack.start("gateway", VERTAC_SITES=SITE, VERTAC_GATEWAY_PORT=str(port),
                    VERTAC_GATEWAY_HOST="127.0.0.1",
                    VERTAC_NATS_URL=as_user("gateway"))  # fmt: skip
        base, token = f"http://127.0.0.1:{port}", await stack.token()

        async def site_messages() -> int:
            return (await cjs.stream_info(site_stream(SITE))).state.messages

        # 1. catch-up: the link down, the site's machines publish, the link back
        t0 = time.time_ns() // NS * NS
        per = FRAMES // MACHINES
        batches = [machine_frames(f"m-{i:02d}", per, t0) for i in range(MACHINES)]
        await js_publish(sjs, batches[0][:1])  # the sourcing works before the cut

        async def first_arrived() -> bool:
            return await site_messages() >= 1

        await until(first_arrived, 120)
        link.cut()
        before = await site_messages()
        for batch in batches:
            await js_publish(sjs, batch[1:] if batch is batches[0] else batch)
        total = per * MACHINES
        samples = sum(SENT.values())  # slow sensors have fewer samples than 10 a frame
        link.restore()
        restored = time.monotonic()

        async def bus_started() -> bool:
            return await site_messages() > before

        async def bus_complete() -> bool:
            return await site_messages() >= before + total - 1

        async def ingest_complete() -> bool:
            return await stored(pg.url, f"{SITE}.") >= samples

        first = await until(bus_started, 180)
        on_bus = await until(bus_complete, 300)
        in_pg = await until(ingest_complete, 300)
        transfer = max(in_pg - first, 1e-3)
        print(f"federation catch-up: {total:,} frames ({samples:,} samples) missed during the "
              f"outage; first at central {first - restored:.1f} s after the link came back, all "
              f"on central's bus after {on_bus - restored:.1f} s, all stored by central's ingest "
              f"after {in_pg - restored:.1f} s")  # fmt: skip
        print(f"  catch-up rate into central's database: {samples / (in_pg - restored):,.0f} "
              f"samples/s from the link's return, {samples / transfer:,.0f} samples/s from "
              f"the first arrival")  # fmt: skip

        # what a digest saves on the link, and what making it costs a site's ingest per frame
        whole = [payload for _, payload, _ in batches[0]]
        made, took = [], []
        for payload in whole:
            start = time.perf_counter()
            made.append(frame_message(digest(decode_binary(payload, sensors=())))[1])
            took.append((time.perf_counter() - start) * 1e6)
        full_b, digest_b = statistics.median(map(len, whole)), statistics.median(map(len, made))
        print(f"  a digest instead of the samples (--site-samples SITE=digest): "
              f"{digest_b:,.0f} bytes a frame against {full_b:,.0f} whole ({full_b / digest_b:.1f}x "
              f"fewer over the link); making it costs a site's ingest "
              f"{statistics.median(took):,.0f} us a frame (median of {len(took):,})")  # fmt: skip

        # 2. latency: a site's frame to a viewer at central, against a frame of central's own
        async def paced(js, stream_id: str) -> None:  # type: ignore[no-untyped-def]
            model = build_machine(stream_id=stream_id, sensors=SENSORS, rate_hz=RATE_HZ,
                                  cycle_s=30, active_signal=False)  # fmt: skip
            start = time.time_ns() // NS * NS + 60 * NS  # after the catch-up's frames
            sim, step = Simulation(model, start), FRAME_MS * 1_000_000
            for i in range(int(MEASURE_S * 1000 / FRAME_MS)):
                f = sim.frame(i, start + i * step, start + (i + 1) * step)
                frame = Frame(stream_id, 10_000 + i, f.series, time.time_ns())
                subject, payload, headers = frame_message(frame)
                await js.publish(subject, payload, headers=headers)
                await asyncio.sleep(FRAME_MS / 1000)

        site_ms = await viewer_latencies(base, token, f"{SITE}.m-00",
                                         lambda: paced(sjs, "m-00"))  # fmt: skip
        local_ms = await viewer_latencies(base, token, "local-1", lambda: paced(cjs, "local-1"))
        for name, xs in (("a site's frame", site_ms), ("central's own frame (baseline)", local_ms)):
            print(f"  latency to a viewer at central, {name}: p50 {statistics.median(xs):.0f} ms, "
                  f"p99 {percentile(xs, 0.99):.0f} ms ({len(xs)} frames)")  # fmt: skip
        print(f"  a site's frame costs {statistics.median(site_ms) - statistics.median(local_ms):+.0f}"
              " ms at the median over central's own")  # fmt: skip
    finally:
        await cnc.close()
        await snc.close()
        stack.stop()
        await link.close()
        site.stop()
        central.stop()
        pg.stop()


async def js_publish(js, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:  # type: ignore[no-untyped-def]
    """Publish with up to 256 acknowledgements outstanding (as edges do)."""
    window: list[asyncio.Future[object]] = []
    for subject, payload, headers in messages:
        window.append(asyncio.ensure_future(js.publish(subject, payload, headers=headers)))
        if len(window) >= 256:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)


if __name__ == "__main__":
    asyncio.run(main())
