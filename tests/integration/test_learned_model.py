"""The learned model of normal cycles and the health trend on real servers (NATS, PostgreSQL,
cycles, analysis, alerts, gateway), at default settings: a simulated press whose pressure drifts
a little more every cycle. The model learns from the healthy cycles (once each, kept in
PostgreSQL), is shown beside the comparison, feeds the score once it learnt enough; the trend's
alert is raised before any cycle scores critical; the history's REST list carries T², SPE and
the trend."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from edge.run import SimulateOptions, simulate
from edge.simulator import Fault, build_machine
from schemas.messages import AnalysisCompleted
from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, eventually
from tests.scenarios import SIGNAL_TRIGGER, start_cycles_and_analysis

pytestmark = pytest.mark.integration

CYCLE_S = 4
CYCLES = 40


@pytest.mark.timeout(600)
async def test_the_model_learns_feeds_the_score_and_the_trend_warns_before_critical(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_alerts(AlertsSettings(metrics_port=0), common, running.stop))
    start_cycles_and_analysis(running, common)
    machine = build_machine(stream_id=stream_id, sensors=6, rate_hz=50, cycle_s=CYCLE_S,
                            active_signal=True,
                            faults=(Fault("pressure_1", "drift", 0.3, 12),))  # fmt: skip
    results: dict[str, AnalysisCompleted] = {}

    async def on_result(msg) -> None:  # type: ignore[no-untyped-def]
        r = AnalysisCompleted.model_validate_json(msg.data)
        results[r.cycle_id] = r

    await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        await client.post("/api/live/register", json=machine.registration().model_dump(mode="json"))
        await client.put(f"/api/live/stream/{stream_id}/cycle-config", json=SIGNAL_TRIGGER)
        frames = int(CYCLES * CYCLE_S * 10) + 5
        await simulate(bus, machine, SimulateOptions(speed=0, frames=frames))

        async def critical_or_done() -> bool:
            return any(r.risk_class == "critical" for r in results.values()) or len(results) >= 35

        await eventually(critical_or_done, timeout=240)
        rows = (await client.get(f"/api/live/stream/{stream_id}/cycles",
                                 params={"limit": 100})).json()  # fmt: skip
        order = {c["cycle_id"]: c["cycle_no"] for c in rows}
        ordered = sorted(results.values(), key=lambda r: order[r.cycle_id])

        # learning, then judged; the version counts every cycle it learnt from
        first = ordered[0].model
        assert first is not None and not first.available and "learning: 3 of the 5" in first.note
        judged = [r for r in ordered if r.model is not None and r.model.available]
        assert judged, [r.model for r in ordered]
        versions = [r.model.model_version for r in judged if r.model is not None]
        assert versions == sorted(versions) and versions[0] >= 5
        assert any(r.model is not None and r.model.feeds_score for r in ordered)
        healthy = [r.health_score for r in ordered[:8] if r.health_score is not None]
        assert min(healthy) >= 80 and max(healthy) < 99.95, healthy  # a band, not 100s

        # the trend alert comes before the first critical cycle
        critical = [i for i, r in enumerate(ordered) if r.risk_class == "critical"]
        alerted = [i for i, r in enumerate(ordered) if r.trend is not None and r.trend.alert]
        assert critical and alerted and alerted[0] < critical[0], (alerted, critical)
        warned = ordered[alerted[0]].trend
        assert warned is not None and warned.degrading and warned.cycles_to_threshold is not None
        assert warned.seconds_to_threshold is not None and warned.seconds_to_threshold > 0
        assert max(warned.sensors, key=lambda s: warned.sensors[s]) == "pressure_1"

        async def trend_alert() -> list[dict] | None:
            r = await client.get("/api/live/alerts", params={"stream_id": stream_id})
            found = [a for a in r.json() if a["rule"] == "_trend"]
            return found or None

        (alert, *_) = await eventually(trend_alert, timeout=30)
        assert alert["severity"] == "warning" and "may reach 40 in" in alert["message"]

        # REST: the cycle list carries the model's statistics and the trend (history page)
        rows = (await client.get(f"/api/live/stream/{stream_id}/cycles",
                                 params={"limit": 100})).json()  # fmt: skip
        listed = {c["cycle_id"]: c for c in rows}
        one = listed[judged[-1].cycle_id]
        assert one["t2"] == pytest.approx(judged[-1].model.t2)  # type: ignore[union-attr]
        assert one["spe_limit_99"] > 0 and one["trend"] is not None
        lv = judged[-1].model.level  # type: ignore[union-attr]
        assert lv is not None
        assert one["level_ratio_99"] == pytest.approx(
            max(lv.t2 / lv.t2_limit_99, lv.spe / lv.spe_limit_99)
        )
        detail = (await client.get(f"/api/live/cycles/{judged[-1].cycle_id}")).json()
        assert detail["analysis"]["model"]["contributions"][0]["points"]

    # each healthy cycle learnt once, in PostgreSQL, under the reference's version
    async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
        cur = await conn.execute(
            "SELECT cycle_ids, learnt FROM live_models WHERE stream_id = %s", (stream_id,)
        )
        ((ids, learnt),) = await cur.fetchall()
    assert len(ids) == len(set(ids)) == learnt >= 2
    assert set(ids) <= set(results)


async def test_rows_of_a_model_that_cannot_be_read_are_dropped_and_it_learns_again(
    database_url: str, stream_id: str
) -> None:
    """A ``live_models`` row that cannot be read (a broken disk, a hand edit) must not fail
    every later cycle's analysis: the rows are dropped with a warning and the model learns again,
    its count starting over."""
    import numpy as np
    from psycopg_pool import AsyncConnectionPool

    from services.analysis.adapters import Models
    from services.analysis.mspc import ROW_FORMAT

    async with AsyncConnectionPool(database_url, open=False) as pool:
        models = Models(pool)

        def row(v: float) -> np.ndarray:  # a row: its format tag, then its columns
            return np.r_[ROW_FORMAT, np.arange(5, dtype=np.float64) + v]

        assert await models.learn(stream_id, 1, "c-1", row(0), keep=10)
        assert await models.learn(stream_id, 1, "c-2", row(1), keep=10)
        good = await models.learnt(stream_id, 1)
        assert good.cycle_ids == ["c-1", "c-2"] and good.total == 2
        assert good.rows is not None and good.rows.shape == (2, 6)
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE live_models SET rows = %s WHERE stream_id = %s", (b"\x93NUMPY garbage",
                                                                          stream_id),
            )  # fmt: skip
        dropped = await models.learnt(stream_id, 1)
        assert (dropped.cycle_ids, dropped.rows, dropped.total) == ([], None, 0)
        assert await models.learn(stream_id, 1, "c-3", row(2), keep=10)
        again = await models.learnt(stream_id, 1)
        assert again.cycle_ids == ["c-3"] and again.total == 1
        assert again.rows is not None and np.array_equal(again.rows, row(2)[None, :])
        assert await models.total(stream_id, 1) == 1
        # a row of another format (a release that unfolds cycles otherwise) is never mixed with
        # the rows held: they are dropped and the model learns again
        other = row(3)
        other[0] = ROW_FORMAT + 1
        assert await models.learn(stream_id, 1, "c-4", other, keep=10)
        fresh = await models.learnt(stream_id, 1)
        assert fresh.cycle_ids == ["c-4"] and fresh.total == 1
