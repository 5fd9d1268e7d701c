"""The shipped Grafana dashboard's queries, run as Grafana's PostgreSQL data source runs them
(macros and template variables expanded), against real PostgreSQL holding rollups, cycles and
alerts written by the services' own code."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from edge.publisher import FramePublisher
from schemas.frames import Frame, Series
from services.common.config import CommonSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import REPO, eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "vertac.json"
S = 1_000_000_000


def expand(sql: str, stream: str, sensors: list[str], start: datetime, end: datetime) -> str:
    """Grafana's expansion: ``$__timeFilter(x)`` to a BETWEEN of the dashboard's range, a plain
    variable as its text, a multi-value variable as quoted, comma-separated values."""
    import re

    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    sql = sql.replace("$sensor", ",".join(f"'{s}'" for s in sensors))
    return sql.replace("$stream", stream)


async def test_every_panel_of_the_shipped_dashboard_returns_rows(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    t0 = (time.time_ns() // (60 * S) - 3) * 60 * S
    publisher = FramePublisher(bus.js)
    for k in range(120):  # 2 min of 10 Hz
        t = t0 + k * S
        await publisher.publish(
            Frame(stream_id, k, (Series("p", np.arange(10.0) + k, t, 100_000_000),))
        )
    await publisher.flush()

    async def stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 120

    await eventually(stored, timeout=60)
    ended = datetime.fromtimestamp(t0 / S, UTC) + timedelta(minutes=1)
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        await conn.execute(
            "INSERT INTO live_streams (stream_id, device_name, sensors, registered_at) "
            "VALUES (%s, 'Press', %s::jsonb, now())",
            (stream_id, json.dumps([{"id": "p"}])),
        )
        await conn.execute(
            "INSERT INTO live_cycles (cycle_id, stream_id, state, started_at, ended_at) "
            "VALUES (%s, %s, 'completed', %s, %s)",
            (f"{stream_id}-c1", stream_id, ended - timedelta(seconds=30), ended),
        )
        await conn.execute(
            "INSERT INTO live_deviations (cycle_id, reference_version, stream_id, health_score,"
            " risk_class) VALUES (%s, 1, %s, 87.5, 'low')",
            (f"{stream_id}-c1", stream_id),
        )
        await conn.execute(
            "INSERT INTO live_alerts (alert_id, stream_id, severity, rule, sensor_id, raised_at) "
            "VALUES (%s, %s, 'warning', 'p-high', 'p', %s)",
            (f"{stream_id}-a1", stream_id, ended),
        )
        await conn.commit()
        dashboard = json.loads(DASHBOARD.read_text())
        start, end = datetime.fromtimestamp(t0 / S - 3600, UTC), datetime.now(UTC)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        cur = await conn.execute(variables["stream"]["query"].encode())
        assert (stream_id,) in await cur.fetchall()
        cur = await conn.execute(
            expand(variables["sensor"]["query"], stream_id, [], start, end).encode()
        )
        assert await cur.fetchall() == [("p",)]
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                sql = expand(target["rawSql"], stream_id, ["p"], start, end)
                cur = await conn.execute(sql.encode())
                rows = await cur.fetchall()
                assert rows, f"panel {panel['title']!r} returned nothing"
                if "sensor_rollup" in sql and "time," in sql:
                    assert all(isinstance(r[0], datetime) for r in rows)
        # the 1 min panel: two full minutes of p at 10 Hz, 600 samples in each
        cur = await conn.execute(
            expand(
                dashboard["panels"][0]["targets"][0]["rawSql"].replace("min, mean, max", "count"),
                stream_id,
                ["p"],
                start,
                end,
            ).encode()
        )
        assert sum(r[1] for r in await cur.fetchall()) == 1200
