"""The history API on real servers: raw frames for short ranges, rollups for long ones, at most
``max_points`` buckets per sensor, JSON, CSV and Parquet."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from edge.publisher import FramePublisher
from schemas.frames import Frame, Series
from services.common.config import CommonSettings
from services.gateway.history import plan
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import GatewayUrl, eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration
S = 1_000_000_000


def iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / S, UTC).isoformat()


async def test_any_range_comes_back_in_at_most_max_points_buckets(
    bus, common: CommonSettings, running, gateway: GatewayUrl, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    t0 = (time.time_ns() // (60 * S) - 2) * 60 * S  # two minutes ago, on a minute
    publisher = FramePublisher(bus.js)
    for k in range(300):  # 30 s of 100 Hz, frames of 100 ms; p counts up, t is constant
        t = t0 + k * 100_000_000
        values = (k * 10 + np.arange(10)).astype("f8")
        await publisher.publish(
            Frame(
                stream_id,
                k,
                (Series("p", values, t, 10_000_000), Series("t", np.full(10, 20.0), t, 10_000_000)),
            )
        )
    await publisher.flush()

    async def stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 300

    await eventually(stored, timeout=60)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as http:
        url = f"/api/live/stream/{stream_id}/samples"
        # 10 s at 100 points: raw frames, buckets of 100 ms
        r = await http.get(
            url, params={"start": iso(t0), "end": iso(t0 + 10 * S), "max_points": 100}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["resolution"] == "raw" and body["bucket_ms"] == 100
        p = body["sensors"]["p"]
        assert len(p["t_ms"]) == 100 and p["count"] == [10] * 100
        assert p["min"][:3] == [0, 10, 20] and p["max"][:3] == [9, 19, 29]
        assert p["t_ms"][0] == t0 / 1e6
        # one hour up to now at 1,000 points: the 1 s rollups, buckets of 4 s
        r = await http.get(
            url,
            params={"start": iso(t0 - 3600 * S + 60 * S), "end": iso(t0 + 60 * S), "sensors": "p"},
        )
        body = r.json()
        assert body["resolution"] == "1s" and body["bucket_ms"] == 4000
        assert list(body["sensors"]) == ["p"]
        p = body["sensors"]["p"]
        assert sum(p["count"]) == 3000 and len(p["t_ms"]) <= 1000
        assert min(p["min"]) == 0 and max(p["max"]) == 2999
        # a day: the 1 min rollups
        r = await http.get(
            url, params={"start": iso(t0 - 86400 * S), "end": iso(t0 + 60 * S), "max_points": 500}
        )
        body = r.json()
        assert body["resolution"] == "1m"
        assert sum(body["sensors"]["t"]["count"]) == 3000
        assert body["sensors"]["t"]["mean"] == [20.0]
        # CSV and Parquet for download, the same rows
        r = await http.get(
            url,
            params={"start": iso(t0), "end": iso(t0 + 10 * S), "max_points": 10, "format": "csv"},
        )
        assert r.headers["content-type"].startswith("text/csv")
        lines = r.text.splitlines()
        assert lines[0] == "time,sensor,min,max,mean,count" and len(lines) == 1 + 20
        r = await http.get(
            url,
            params={
                "start": iso(t0),
                "end": iso(t0 + 10 * S),
                "max_points": 10,
                "format": "parquet",
            },
        )
        table = pq.read_table(io.BytesIO(r.content))
        assert table.num_rows == 20 and table.column("count").to_pylist() == [100] * 20
        # a range that ends before it starts is refused, naming the field
        r = await http.get(url, params={"start": iso(t0 + S), "end": iso(t0)})
        assert r.status_code == 422 and "start" in r.text


def test_the_plan_picks_the_coarsest_source_that_still_gives_max_points() -> None:
    now = 1_800_000_000 * S
    assert plan(now, now + 10 * S, 1000).resolution == "raw"
    assert plan(now, now + 3600 * S, 1000).resolution == "1s"
    # ten minutes as a browser's clock gives them (a millisecond more) are still raw
    assert plan(now, now + 600 * S + 1_000_000, 2000).resolution == "raw"
    assert plan(now, now + 602 * S, 2000).resolution == "1s"
    assert plan(now, now + 30 * 86400 * S, 1000).resolution == "1m"
    p = plan(now, now + 86400 * S, 1000)
    assert p.resolution == "1m" and p.bucket_ns % (60 * S) == 0
    assert (
        plan(now, now + int(timedelta(minutes=20).total_seconds()) * S, 10_000).resolution == "1s"
    )


async def test_vertac_export_writes_the_raw_samples_of_a_range_as_parquet(
    bus, common: CommonSettings, running, stream_id: str, tmp_path
) -> None:
    import asyncio
    import os
    import sys

    from tests.conftest import REPO

    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    t0 = (time.time_ns() // S - 100) * S
    publisher = FramePublisher(bus.js)
    n_frames = 1200  # more than one chunk of 500 frames
    for k in range(n_frames):
        t = t0 + k * 50_000_000
        q = np.full(5, 192, dtype=np.uint8)
        q[0] = 0 if k % 7 == 0 else 192
        await publisher.publish(
            Frame(
                stream_id,
                k,
                (Series("p", (k * 5 + np.arange(5)).astype("f8"), t, 10_000_000, None, q),),
            )
        )
    await publisher.flush()

    async def stored() -> bool:
        return await frame_count(common.database_url, stream_id) == n_frames

    await eventually(stored, timeout=90)
    out = tmp_path / "range.parquet"
    start, end = t0 + 10 * S, t0 + 50 * S  # 40 s of the 60 s
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "export", "--stream", stream_id,
        "--start", iso(start), "--end", iso(end), "--out", str(out),
        cwd=REPO, env={**os.environ, "VERTAC_DATABASE_URL": common.database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    table = pq.read_table(out)
    t = table.column("time").cast("int64").to_numpy()
    values = table.column("value").to_numpy()
    assert table.num_rows == 40 * 100  # 100 samples/s
    assert t.min() == start and t.max() < end
    order = np.argsort(t)
    assert np.array_equal(values[order], np.arange(10 * 100, 50 * 100, dtype="f8"))
    quality = table.column("quality").to_numpy()[order]
    assert (quality == 0).sum() == sum(1 for k in range(200, 1000) if k % 7 == 0)
    assert set(table.column("sensor").to_pylist()) == {"p"}
    assert f"wrote {40 * 100} samples" in stdout.decode()
