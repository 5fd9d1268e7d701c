"""Browser benchmark (``make bench``): the live page in Chromium with 16 sensors x 1 kHz for 30 s.

Runs nats-server and PostgreSQL embedded, ingest and the gateway (default settings) as processes,
and Debian's Chromium through Playwright. A publisher sends frames of 50 ms (16 x 50 samples) in
real time, each stamped with its publication time. Prints:

- the page's animation frames per second and chart redraws per second (each redraw updates all 16
  charts with the new data), and the time one redraw of the 16 charts takes;
- the latency from a frame's publication to the paint that shows it, p50/p99, and the part of it
  spent in the page (message received -> painted);
- baselines measured in the same run: the idle page's frame rate (no data), and the same
  publication -> WebSocket message latency seen by a plain WebSocket client (no browser), so the
  browser's own share is the difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import httpx
import numpy as np
import websockets

from edge.publisher import frame_message
from schemas.frames import Frame, Series
from services.common.runtime import open_bus
from services.embedded import free_port, wait_for_port
from tests.bench.stack import REPO, embedded_stack, percentile
from tests.browser.conftest import CHROMIUM_FLAGS, chromium_path, sign_in

SENSORS = 16
RATE_HZ = 1000
FRAME_MS = 50
SECONDS = float(os.environ.get("VERTAC_BENCH_BROWSER_S", "30"))
STREAM = "bench-browser"


async def publish(bus: Any, seconds: float) -> int:
    """16 sensors x 1 kHz in frames of 50 ms of contiguous samples, published in real time. Each
    frame leaves at its nominal time +/- 20 ms (uniform), so its phase against the gateway's send
    cadence is random, as with a real machine, instead of locked to one value for the whole run."""
    rng = np.random.default_rng(3)
    n = RATE_HZ * FRAME_MS // 1000
    period_ns = 1_000_000_000 // RATE_HZ
    phase = np.linspace(0, 2 * np.pi, SENSORS, endpoint=False)
    frames = int(seconds * 1000 / FRAME_MS)
    t_start = time.monotonic()
    first = time.time_ns()
    for seq in range(frames):
        due = t_start + (seq + 1) * FRAME_MS / 1000 + rng.uniform(-0.02, 0.02)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (first + np.arange(n) * period_ns) / 1e9
        series = tuple(
            Series(f"s{i:02d}", (np.sin(2 * np.pi * 0.5 * t + phase[i]) * 10
                                 + rng.normal(0, 0.3, n)).astype("f4"), first, period_ns)
            for i in range(SENSORS)
        )  # fmt: skip
        first += n * period_ns
        subject, payload, headers = frame_message(Frame(STREAM, seq, series, time.time_ns()))
        await bus.js.publish_async(subject, payload, headers=headers)
    return frames


async def plain_client(url: str, out: list[float], stop: asyncio.Event) -> None:
    """The baseline: publication -> samples message at a WebSocket client without a browser."""
    async with websockets.connect(url, max_size=None) as ws:
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time() * 1000
            msg = json.loads(text)
            if msg.get("type") == "samples":
                out.extend(now - s for s in msg["data"].get("sent_ms", []))


async def main() -> None:
    binary = chromium_path()
    if binary is None:
        sys.exit("chromium is not installed (apt-get install chromium chromium-driver)")
    from playwright.async_api import async_playwright

    port = free_port()
    async with embedded_stack("vertac-bench-browser-") as stack:
        common = stack.common
        stack.start("ingest", "gateway", VERTAC_GATEWAY_PORT=str(port))
        wait_for_port("127.0.0.1", port, 60, None)
        base = f"http://127.0.0.1:{port}"
        sensors = [{"id": f"s{i:02d}", "unit": "bar", "rate_hz": RATE_HZ} for i in range(SENSORS)]
        token = await stack.token("admin")
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            r = await client.post("/api/live/register", json={"device_name": "Bench",
                                                              "stream_id": STREAM, "sensors": sensors})  # fmt: skip
            r.raise_for_status()
        bus = await open_bus(common, "vertac-bench-browser")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=binary, headless=True, args=CHROMIUM_FLAGS
            )
            page = await browser.new_page(viewport={"width": 1600, "height": 1200})
            await sign_in(page, base, token)
            await page.goto(f"{base}/#/live/{STREAM}")
            await page.wait_for_selector('[data-testid="connection"][data-state="open"]')
            await page.evaluate("window.__vertac.reset()")
            await asyncio.sleep(5)
            idle = await page.evaluate("window.__vertac.frames") / 5

            pub = asyncio.ensure_future(publish(bus, SECONDS + 4))
            await asyncio.sleep(4)  # warm-up: the 30 s window fills from here
            stop = asyncio.Event()
            plain: list[float] = []
            ws_url = (
                base.replace("http", "ws") + f"/api/live/ws/stream/{STREAM}?access_token={token}"
            )
            client_task = asyncio.ensure_future(plain_client(ws_url, plain, stop))
            await page.select_option('[data-testid="window"]', "30")
            await page.evaluate("window.__vertac.reset()")
            t0 = time.monotonic()
            await pub
            elapsed = time.monotonic() - t0
            frames = round(elapsed * 1000 / FRAME_MS)
            stop.set()
            await client_task
            shot = REPO / "artifacts" / "browser" / "bench-live-16x1kHz.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(shot), full_page=True)
            got = await page.evaluate(
                "({frames: __vertac.frames, paints: __vertac.paints, "
                "lat: __vertac.latenciesMs, arr: __vertac.arrivalsMs, draw: __vertac.drawMs})"
            )
            await browser.close()
        await bus.close()
        lat, arr, draw = got["lat"], got["arr"], got["draw"]
        if not lat or not plain:
            sys.exit(f"the browser benchmark measured nothing: {len(lat)} page latencies, "
                     f"{len(plain)} plain-client latencies (sign-in or the feed failed)")  # fmt: skip
        in_page = [p - a for p, a in zip(lat, arr, strict=False)]
        print(
            f"VerTac browser benchmark: {SENSORS} sensors x {RATE_HZ} Hz for {elapsed:.0f} s "
            f"({frames} frames of {FRAME_MS} ms, {SENSORS * RATE_HZ:,} samples/s), window 30 s, "
            "gateway defaults (a WebSocket message every 50 ms), headless Chromium"
        )
        print(
            f"  page frames per second: {got['frames'] / elapsed:.1f} "
            f"(baseline, idle page: {idle:.1f}; ratio {got['frames'] / elapsed / idle:.2f})"
        )
        print(
            f"  chart redraws with new data: {got['paints'] / elapsed:.1f}/s; one redraw of "
            f"{SENSORS} charts: p50 {statistics.median(draw):.1f} ms, "
            f"p99 {percentile(draw, 0.99):.1f} ms"
        )
        print(
            f"  frame published -> painted: p50 {statistics.median(lat):.0f} ms, "
            f"p99 {percentile(lat, 0.99):.0f} ms ({len(lat)} frames)"
        )
        print(
            f"    of which in the page (message received -> painted): "
            f"p50 {statistics.median(in_page):.0f} ms, p99 {percentile(in_page, 0.99):.0f} ms"
        )
        if plain:
            print(
                f"  baseline, published -> WebSocket message at a plain client (no browser): "
                f"p50 {statistics.median(plain):.0f} ms, p99 {percentile(plain, 0.99):.0f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
