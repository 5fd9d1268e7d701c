"""Rollups written by ingest with the frames, on a real PostgreSQL, read as Grafana's
PostgreSQL data source reads them (the views and ``$__timeFilter``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from edge.publisher import FramePublisher, frame_message
from schemas import subjects
from schemas.frames import Frame, Series
from services.common.config import CommonSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration
S = 1_000_000_000


def grafana(sql: str, start: datetime, end: datetime) -> str:
    """What Grafana's PostgreSQL data source sends for ``$__timeFilter(time)``."""
    return sql.replace(
        "$__timeFilter(time)",
        f"time BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
    )


async def test_rollups_are_written_with_the_frames_once_and_read_by_a_grafana_query(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    t0 = (time.time_ns() // (60 * S)) * 60 * S  # the start of this minute
    frames = []
    for k in range(20):  # 20 frames of 100 ms at 100 Hz: buckets of 1 s span 10 frames
        t = t0 + (k * 10 + np.arange(10)) * 10_000_000
        frames.append(
            Frame(
                stream_id,
                k,
                (Series("p", (k * 10 + np.arange(10)).astype("f8"), int(t[0]), 10_000_000),),
            )
        )
    publisher = FramePublisher(bus.js)
    for f in frames:
        await publisher.publish(f)
    await publisher.flush()
    # one frame again under another message id: JetStream lets it by, the database key stops
    # it, and its samples must not be counted twice in the rollups
    subject, payload, headers = frame_message(frames[3])
    headers[subjects.HEADER_MSG_ID] = "again"
    await bus.js.publish(subject, payload, headers=headers)
    marker = Frame(stream_id, 99, (Series("q", np.zeros(1), t0 + 5 * S, 10_000_000),))
    await publisher.publish(marker)
    await publisher.flush()
    await eventually(lambda: _count(common.database_url, stream_id, 21), timeout=60)

    query = (
        "SELECT time, sensor_id, min, max, mean, count, last, bad_count FROM sensor_rollup_1s "
        f"WHERE stream_id = '{stream_id}' AND sensor_id = 'p' AND $__timeFilter(time) ORDER BY time"
    )
    start = datetime.fromtimestamp(t0 / S - 60, UTC)
    end = datetime.fromtimestamp(t0 / S + 60, UTC)
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        cur = await conn.execute(grafana(query, start, end).encode())
        rows = await cur.fetchall()
        assert [(r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows] == [
            (0.0, 99.0, 49.5, 100, 99.0, 0),
            (100.0, 199.0, 149.5, 100, 199.0, 0),
        ]
        assert rows[0][0] == datetime.fromtimestamp(t0 / S, UTC)
        cur = await conn.execute(
            f"SELECT count, min, max FROM sensor_rollup_1m WHERE stream_id = '{stream_id}' AND sensor_id = 'p'"
        )
        assert await cur.fetchall() == [(200, 0.0, 199.0)]


async def _count(url: str, stream_id: str, n: int) -> bool:
    return await frame_count(url, stream_id) == n
