"""The history page's signal charts in a real Chromium against a real gateway and PostgreSQL: two
hours of stored frames (written with their rollups by ingest's own store), preset ranges that
switch between the 1 s / 1 min rollups and raw frames, drag-to-zoom, back, and the CSV of the
range shown."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import httpx
import numpy as np
import pytest
import zstandard
from playwright.async_api import expect
from psycopg_pool import AsyncConnectionPool

from schemas.frames import Frame, Series
from services.common.config import CommonSettings
from services.ingest.adapters import PgFrameStore
from services.ingest.logic import to_row
from tests.browser.conftest import sign_in
from tests.conftest import GatewayUrl

pytestmark = pytest.mark.browser
S = 1_000_000_000


async def store_two_hours(database_url: str, stream_id: str, now_ns: int) -> None:
    """10 Hz of a ramp (``pressure``, the sample index) and a constant (``temp``), 10 s frames."""
    pool = AsyncConnectionPool(database_url, open=False, min_size=1, max_size=2)
    await pool.open()
    try:
        store = PgFrameStore(pool)
        compressor = zstandard.ZstdCompressor()
        t0 = now_ns - 7200 * S
        frames = []
        for k in range(720):
            t = t0 + k * 10 * S
            ramp = (k * 100 + np.arange(100)).astype("f4")
            frames.append(Frame(stream_id, k, (Series("pressure", ramp, t, S // 10),
                                               Series("temp", np.full(100, 20.0), t, S // 10))))  # fmt: skip
        for lo in range(0, len(frames), 60):
            batch = frames[lo : lo + 60]
            await store.write([to_row(f, compressor) for f in batch], batch)
    finally:
        await pool.close()


async def shown(page: Any) -> dict[str, float | str]:
    status = page.get_by_test_id("history-range")
    return {
        "resolution": await status.get_attribute("data-resolution") or "",
        "start": float(await status.get_attribute("data-start-ms") or "nan"),
        "end": float(await status.get_attribute("data-end-ms") or "nan"),
        "bucket": float(await status.get_attribute("data-bucket-ms") or "nan"),
    }


async def test_signals_switch_source_with_the_range_and_zoom_by_dragging(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str, page: Any, tmp_path
) -> None:
    registration = {
        "stream_id": stream_id,
        "device_name": "Rig",
        "sensors": [
            {"id": "pressure", "name": "Pressure", "unit": "bar", "rate_hz": 10},
            {"id": "temp", "name": "Oil temperature", "unit": "°C", "rate_hz": 10},
        ],
    }
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.post("/api/live/register", json=registration)
        assert r.status_code in (200, 201), r.text
    now = time.time_ns() // S * S
    await store_two_hours(common.database_url, stream_id, now)

    status = page.get_by_test_id("history-range")
    charts = page.get_by_test_id("signal-chart")
    # the default range, the last hour: the 1 s rollups, one chart per sensor with its name
    await sign_in(page, gateway, gateway.token)
    await page.goto(f"{gateway}/#/history/{stream_id}")
    await expect(status).to_have_attribute("data-resolution", "1s", timeout=30_000)
    await expect(charts).to_have_count(2)
    await expect(page.locator('[data-sensor="pressure"] canvas')).to_have_count(1)
    await expect(page.locator('[data-sensor="pressure"]')).to_contain_text("Pressure")
    one_hour = await shown(page)
    assert one_hour["end"] - one_hour["start"] == pytest.approx(3600_000, abs=60_000)
    buckets = int(await page.locator('[data-sensor="pressure"]').get_attribute("data-buckets"))
    assert 100 < buckets <= 2000

    # 24 h: the 1 min rollups (two hours of data in it)
    await page.get_by_test_id("range-24h").click()
    await expect(status).to_have_attribute("data-resolution", "1m", timeout=30_000)
    day = int(await page.locator('[data-sensor="temp"]').get_attribute("data-buckets"))
    assert 0 < day <= 2000

    # 10 min: raw frames
    await page.get_by_test_id("range-10min").click()
    await expect(status).to_have_attribute("data-resolution", "raw", timeout=30_000)
    ten = await shown(page)
    assert ten["end"] - ten["start"] == pytest.approx(600_000, abs=1_000)

    # drag across the middle fifth of the pressure chart: that range, still raw, finer buckets
    over = page.locator('[data-sensor="pressure"] .u-over')
    box = await over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + 0.4 * box["width"], y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 0.5 * box["width"], y, steps=5)
    await page.mouse.move(box["x"] + 0.6 * box["width"], y, steps=5)
    await page.mouse.up()
    await expect(status).not_to_have_attribute(
        "data-start-ms", str(int(ten["start"])), timeout=30_000
    )
    await expect(status).to_have_attribute("data-resolution", "raw", timeout=30_000)
    zoomed = await shown(page)
    span = zoomed["end"] - zoomed["start"]
    assert span == pytest.approx(0.2 * 600_000, rel=0.15)
    assert ten["start"] < zoomed["start"] < zoomed["end"] < ten["end"]
    assert zoomed["bucket"] < ten["bucket"]

    # the CSV of what is shown: the zoomed range's buckets of both sensors
    async with page.expect_download() as dl:
        await page.get_by_test_id("history-csv").click()
    path = tmp_path / "history.csv"
    await (await dl.value).save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert {r["sensor"] for r in rows} == {"pressure", "temp"}
    assert all(r["mean"] == "20.0" for r in rows if r["sensor"] == "temp")
    assert sum(int(r["count"]) for r in rows if r["sensor"] == "pressure") == pytest.approx(
        span / 100, abs=2
    )  # 10 Hz

    # back to the 10 minutes, then zoom out to 20
    await page.get_by_test_id("history-back").click()
    await expect(status).to_have_attribute("data-start-ms", str(int(ten["start"])), timeout=30_000)
    await page.get_by_test_id("history-zoom-out").click()
    await expect(status).to_have_attribute("data-resolution", "1s", timeout=30_000)
    wide = await shown(page)
    assert wide["end"] - wide["start"] == pytest.approx(1_200_000, abs=60_000)
