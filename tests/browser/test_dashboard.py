"""The dashboard in a real Chromium against a real gateway, nats-server and PostgreSQL: live data
from the simulator, start/stop, alert acknowledge, the report of a finished cycle with its exports,
history, "use as reference", "save as dataset", and reconnecting after the gateway restarts."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import expect
from pypdf import PdfReader

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.common.config import CommonSettings
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings
from services.embedded import free_port
from tests.browser.conftest import ARTIFACTS, sign_in
from tests.conftest import GatewayUrl, admin_token, eventually
from tests.scenarios import SIGNAL_TRIGGER, flow_offset_machine, start_cycles_and_analysis

pytestmark = pytest.mark.browser


async def counters(page: Any) -> dict[str, float]:
    return await page.evaluate(
        "({paints: __vertac.paints, messages: __vertac.messages, latencies: __vertac.latenciesMs.length})"
    )


async def test_live_page_shows_moving_data_and_drives_cycles_and_alerts(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str, page: Any
) -> None:
    running.start(serve_cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop))
    running.start(serve_alerts(AlertsSettings(metrics_port=0, rules_refresh_s=0.1, tick_s=0.1),
                               common, running.stop))  # fmt: skip
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=200, cycle_s=4)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        r = await client.post(
            "/api/live/register", json=model.registration().model_dump(mode="json")
        )
        assert r.status_code == 201, r.text
        # a rule that holds all the time, so its alert stays raised until acknowledged
        rule = {"kind": "limit", "sensor_id": "pressure_1", "lo": 1e9, "severity": "critical"}
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/p-low", json=rule)
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.3)  # the alerts service re-reads its rules
        sim = asyncio.create_task(simulate(bus, model, SimulateOptions(speed=1, duration_s=120)))
        try:
            await asyncio.sleep(2)  # some history: the page opens with it already drawn
            anna = await admin_token(common.database_url, "anna", "operator")
            await sign_in(page, gateway, anna)
            await page.goto(f"{gateway}/#/live/{stream_id}")
            await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
            await eventually(lambda: page.evaluate("__vertac.backfilled > 4 * 300"), timeout=10)
            card = page.get_by_test_id("sensor-pressure_1")
            await expect(card).not_to_have_class("sensor stale", timeout=10_000)
            await expect(card.locator(".stats")).not_to_contain_text("min \u2013")
            value = card.locator(".value")
            first = await value.text_content()
            before = await counters(page)
            await expect(value).not_to_have_text(first or "", timeout=5_000)  # the value moves
            await asyncio.sleep(1.0)
            after = await counters(page)
            assert after["paints"] > before["paints"] + 3, (before, after)
            assert after["messages"] > before["messages"]
            assert after["latencies"] > 0  # frames were timed from publication to paint
            await expect(page.get_by_test_id("chart-pressure_1").locator("canvas")).to_have_count(1)

            # start and stop from the page: the state comes back over the bus
            state = page.get_by_test_id("cycle-state")
            await expect(state).to_have_text("idle")
            await page.get_by_test_id("start").click()
            await expect(state).to_have_text("running", timeout=10_000)
            await expect(page.get_by_test_id("start")).to_be_disabled()
            await expect(page.get_by_test_id("cycle-no")).to_have_text("1")
            await expect(page.get_by_test_id("cycle-samples")).not_to_have_text("0", timeout=5_000)
            rows = (await client.get(f"/api/live/stream/{stream_id}/cycles")).json()
            assert rows[0]["state"] == "running"
            await asyncio.sleep(1.0)
            await page.get_by_test_id("stop").click()
            await expect(state).to_have_text("idle", timeout=10_000)
            await expect(page.locator("#toast")).to_contain_text("Cycle 1 completed")

            async def completed() -> dict | None:
                rows = (await client.get(f"/api/live/stream/{stream_id}/cycles")).json()
                return rows[0] if rows and rows[0]["state"] == "completed" else None

            done = await eventually(completed)
            assert done["duration_s"] >= 1.0

            # the alert ticker shows the critical alert; acknowledge it from the page
            alert = page.get_by_test_id("alert").first
            await expect(alert).to_contain_text("critical", timeout=10_000)
            await expect(page.get_by_label("operator name")).to_be_hidden()  # the token names her
            await alert.get_by_test_id("ack").click()
            # the alerts service answers once it holds the stream's lock: on a busy box that
            # can take seconds; a refusal would show as a toast, so the toast is named too
            try:
                await expect(alert).to_contain_text("acknowledged", timeout=30_000)
            except AssertionError as exc:
                shown = await page.locator("#toast").text_content()
                raise AssertionError(f"not acknowledged; the page says {shown!r}") from exc

            async def acknowledged() -> dict | None:
                rows = (
                    await client.get("/api/live/alerts", params={"stream_id": stream_id})
                ).json()
                return rows[0] if rows and rows[0]["state"] == "acknowledged" else None

            row = await eventually(acknowledged)
            assert row["acknowledged_by"] == "anna"
            assert row["rule"] == "p-low"

            # when the machine goes quiet, its sensors are marked stale
            sim.cancel()
            await expect(card).to_have_class("sensor stale", timeout=8_000)

            # the cycle's report (not analysed: no analysis service here) lists the alert
            # active while it ran, and so does its PDF
            cid = done["cycle_id"]
            groups = (await client.get(f"/api/live/cycles/{cid}/alerts")).json()["groups"]
            assert [(g["severity"], g["rule"], g["sensor_id"]) for g in groups] == [
                ("critical", "p-low", "pressure_1")
            ]
            await page.goto(f"{gateway}/#/cycle/{cid}")
            summary = page.get_by_test_id("report").get_by_test_id("alert-summary")
            await expect(summary).to_contain_text("limit on pressure_1: 1 alert")
            pdf = await client.get(f"/api/live/cycles/{cid}/report.pdf")
            text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
            assert "Alerts during the cycle" in text and "limit on pressure_1" in text
        finally:
            sim.cancel()


async def test_a_finished_cycle_opens_its_report_with_exports_history_and_actions(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str, page: Any, tmp_path
) -> None:
    start_cycles_and_analysis(running, common)
    # the automatic reference is made from cycles 1-3; cycle 4 has an offset on flow_1
    model = flow_offset_machine(stream_id)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        await client.post("/api/live/register", json=model.registration().model_dump(mode="json"))
        await client.put(f"/api/live/stream/{stream_id}/cycle-config", json=SIGNAL_TRIGGER)
        await sign_in(page, gateway, gateway.token)
        await page.goto(f"{gateway}/#/live/{stream_id}")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await simulate(bus, model, SimulateOptions(speed=0, frames=170))

        # the analysis arrives over the WebSocket and opens the report on the live page
        report = page.get_by_test_id("last-report")
        await expect(report).to_be_visible(timeout=30_000)
        top = report.get_by_test_id("top-sensors").locator("li").first
        await expect(top).to_contain_text("flow_1", timeout=15_000)
        await expect(report.get_by_test_id("recommendations")).to_contain_text("flow_1")
        score = float(await report.get_by_test_id("health-score").text_content() or "nan")
        rows = (await client.get(f"/api/live/stream/{stream_id}/cycles")).json()
        analysed = next(c for c in rows if c["health_score"] is not None)
        assert score == pytest.approx(analysed["health_score"], abs=0.5)
        cycle_id = analysed["cycle_id"]

        # the full report: cards with overlays, exports
        await report.get_by_role("link", name="open full report").click()
        full = page.get_by_test_id("report")
        await expect(full.get_by_test_id("cycle-meta")).to_contain_text(cycle_id[:8])
        card = full.get_by_test_id("card-flow_1")
        await expect(card.locator("canvas")).to_have_count(1)  # the top sensor's card is open
        await expect(card).to_contain_text("DTW distance")
        await expect(full.get_by_test_id("first-deviator")).to_contain_text("flow_1")

        async with page.expect_download() as dl:
            await full.get_by_test_id("export-pdf").click()
        pdf = tmp_path / "report.pdf"
        await (await dl.value).save_as(pdf)
        text = PdfReader(pdf).pages[0].extract_text()
        assert "VerTac cycle report" in text and cycle_id in text and "flow_1" in text
        pdftoppm = shutil.which("pdftoppm")
        assert pdftoppm, "pdftoppm is needed to check the PDF (apt-get install poppler-utils)"
        subprocess.run([pdftoppm, "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf),
                        str(tmp_path / "page")], check=True)  # fmt: skip
        png = tmp_path / "page-1.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, ARTIFACTS / "report-pdf-page-1.png")

        async with page.expect_download() as dl:
            await full.get_by_test_id("export-samples").click()
        samples_csv = tmp_path / "samples.csv"
        await (await dl.value).save_as(samples_csv)
        lines = list(csv.DictReader(io.StringIO(samples_csv.read_text())))
        assert len(lines) == sum(analysed["samples"].values())

        async with page.expect_download() as dl:
            await full.get_by_test_id("export-analysis").click()
        analysis_csv = tmp_path / "analysis.csv"
        await (await dl.value).save_as(analysis_csv)
        first_row = next(csv.DictReader(io.StringIO(analysis_csv.read_text())))
        assert first_row["sensor_id"] == "flow_1"

        # "save as dataset" and "use as reference"
        await full.get_by_test_id("dataset-name").fill("flow-faults")
        await full.get_by_test_id("dataset-label").fill("flow offset")
        await full.get_by_test_id("save-dataset").get_by_role("button").click()
        await expect(page.locator("#toast")).to_contain_text("Saved to dataset flow-faults")
        (entry,) = (await client.get("/api/live/datasets/flow-faults")).json()
        assert entry["cycle_id"] == cycle_id and entry["label"] == "flow offset"
        assert entry["health_score"] == pytest.approx(analysed["health_score"])

        page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await full.get_by_test_id("use-as-reference").click()
        await expect(page.locator("#toast")).to_contain_text("Reference v2 created")
        refs = (await client.get(f"/api/live/stream/{stream_id}/references")).json()
        active = [r for r in refs if r["active"]]
        assert [r["reference_version"] for r in active] == [2]
        assert active[0]["source_cycles"] == [cycle_id]

        # history: every cycle listed, the trend drawn, a row opens its report
        await page.goto(f"{gateway}/#/history/{stream_id}")
        await expect(page.get_by_test_id("cycle-row")).to_have_count(len(rows))
        await expect(page.get_by_test_id("health-trend").locator("canvas")).to_have_count(1)
        await page.locator(f'[data-cycle-id="{cycle_id}"] a').first.click()
        await expect(page.get_by_test_id("report").get_by_test_id("top-sensors")).to_contain_text(
            "flow_1"
        )


async def test_the_page_reconnects_after_the_gateway_restarts(
    common: CommonSettings, bus, stream_id: str, page: Any, registry: None
) -> None:
    from services.gateway.app import build_app, uvicorn_config
    from services.gateway.config import Settings

    port = free_port()

    async def serve() -> tuple[uvicorn.Server, asyncio.Task[None]]:
        config = uvicorn_config(build_app(Settings(port=port), common),
                                host="127.0.0.1", port=port)  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve())
        await eventually(lambda: asyncio.sleep(0, server.started))
        return server, task

    model = build_machine(stream_id=stream_id, sensors=2, rate_hz=100, cycle_s=4)
    server, task = await serve()
    url = f"http://127.0.0.1:{port}"
    token = await admin_token(common.database_url)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as client:  # fmt: skip
        await client.post("/api/live/register", json=model.registration().model_dump(mode="json"))
    await sign_in(page, url, token)
    sim = asyncio.create_task(simulate(bus, model, SimulateOptions(speed=1, duration_s=120)))
    try:
        await page.goto(f"{url}/#/live/{stream_id}")
        pill = page.get_by_test_id("connection")
        await expect(pill).to_have_attribute("data-state", "open")
        await page.evaluate("window.__sameDocument = true")
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await expect(pill).to_have_attribute("data-state", "waiting", timeout=10_000)
        await expect(pill).to_contain_text("retry in")
        server, task = await serve()
        await expect(pill).to_have_attribute("data-state", "open", timeout=20_000)
        assert await page.evaluate("window.__sameDocument === true")  # no reload
        before = (await counters(page))["paints"]
        await eventually(lambda: _more_paints(page, before), timeout=10)
    finally:
        sim.cancel()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _more_paints(page: Any, before: float) -> bool:
    return (await counters(page))["paints"] > before + 3


async def test_real_hydraulic_cycles_valve_fault_tops_the_report(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str, page: Any
) -> None:
    """Real data: five healthy rig cycles make the reference; a cycle with the valve at 73 %
    (close to failure) follows. The report in the browser names SE (efficiency) first."""
    from edge.replay import SLOT_S, replay_hydraulic
    from services.ingest.app import serve as serve_ingest
    from services.ingest.config import Settings as IngestSettings
    from tests.hydraulic import load_rig

    rig = load_rig()
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    start_cycles_and_analysis(running, common, auto_reference_cycles=5)
    healthy = rig.rows(100, 100, 0, 130, 0).tolist()
    valve = int(rig.rows(100, 73, 0, 130, None)[0])
    # the first cycle registers the stream, so that the page can open on it before the rest
    # arrives; the rest continues on the same time line
    start = time.time_ns() // 1_000_000_000 * 1_000_000_000
    await replay_hydraulic(bus, rig, healthy[:1], stream_id=stream_id, start_ns=start)
    await sign_in(page, gateway, gateway.token)
    await page.goto(f"{gateway}/#/live/{stream_id}")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    await replay_hydraulic(bus, rig, [*healthy[1:], valve], stream_id=stream_id,
                           start_ns=start + SLOT_S * 1_000_000_000)  # fmt: skip

    report = page.get_by_test_id("last-report")
    await expect(report).to_be_visible(timeout=60_000)
    top = report.get_by_test_id("top-sensors").locator("li").first
    await expect(top).to_contain_text("SE", timeout=30_000)
    score = float(await report.get_by_test_id("health-score").text_content() or "nan")
    assert score < 60, score
    await expect(report.get_by_test_id("risk-class")).not_to_have_text("low risk")
    await report.get_by_role("link", name="open full report").click()
    full = page.get_by_test_id("report")
    await expect(full.get_by_test_id("card-SE").locator("canvas")).to_have_count(1)
    await expect(full.get_by_test_id("cycle-meta")).to_contain_text("v1")
