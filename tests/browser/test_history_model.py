"""The history page shows the learned model's T²/SPE chart and the health trend's forecast, in a
real Chromium against a real gateway and PostgreSQL. The cycles and their analyses are those the
analysis handler makes of a simulated press whose pressure drifts (tests/fakes.py), stored with
the cycles and analysis services' own writers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from psycopg_pool import AsyncConnectionPool

from edge.simulator import Fault
from services.analysis.adapters import Results
from services.common.config import CommonSettings
from services.cycles.adapters import CycleRows
from tests.browser.conftest import sign_in
from tests.conftest import GatewayUrl
from tests.fakes import Plant

pytestmark = pytest.mark.browser


async def test_the_history_shows_the_models_chart_and_the_trends_forecast(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str, page: Any
) -> None:
    plant = Plant(faults=(Fault("pressure_1", "drift", 0.5, 14),), stream_id=stream_id)
    ran = await plant.until_critical()
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.post("/api/live/register",
                              json=plant.machine.registration().model_dump(mode="json"))  # fmt: skip
        assert r.status_code in (200, 201), r.text
    pool = AsyncConnectionPool(common.database_url, open=False, min_size=1, max_size=2)
    await pool.open()
    try:
        rows, results = CycleRows(pool), Results(None, pool)  # type: ignore[arg-type]
        for i in range(ran):
            await rows.upsert(plant.event(i))
        for result in plant.results.published:
            await results.store(result, publish=False)
    finally:
        await pool.close()
    last = plant.results.published[-1]
    assert last.trend is not None and last.model is not None and last.model.available

    await sign_in(page, gateway, gateway.token)
    await page.goto(f"{gateway}/#/history/{stream_id}")
    await expect(page.get_by_test_id("cycle-row")).to_have_count(ran)
    forecast = page.get_by_test_id("trend-forecast")
    await expect(forecast).to_contain_text("Health falling")
    await expect(forecast).to_contain_text("may be reached in")
    await expect(forecast).to_contain_text("growing most: pressure_1")
    await expect(page.get_by_test_id("model-chart").locator("canvas")).to_have_count(1)
    legend = page.get_by_test_id("model-chart")
    await expect(legend).to_contain_text("T² / limit")
    await expect(legend).to_contain_text("SPE / limit")
    await expect(legend).to_contain_text("operating point / limit")
