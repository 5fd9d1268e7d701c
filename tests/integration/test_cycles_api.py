"""REST for cycles and references, with gateway, cycles and analysis running on real servers."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from edge.run import SimulateOptions, simulate
from edge.simulator import Fault, build_machine
from services.common.config import CommonSettings
from tests.conftest import GatewayUrl, eventually
from tests.scenarios import SIGNAL_TRIGGER, flow_offset_machine, start_cycles_and_analysis

pytestmark = pytest.mark.integration


async def test_cycles_samples_and_references_over_rest(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str
) -> None:
    start_cycles_and_analysis(running, common, auto_reference_cycles=0)
    model = build_machine(
        stream_id=stream_id,
        sensors=4,
        rate_hz=50,
        cycle_s=4,
        active_signal=True,
        faults=(Fault("flow_1", "offset", 6.0, 3),),
    )
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.get(f"/api/live/stream/{stream_id}/cycle-config")
        assert r.status_code == 200
        assert r.json()["trigger"] == "manual"
        await client.post("/api/live/register", json=model.registration().model_dump(mode="json"))
        bad = {"trigger": "signal", "signal_sensor": "nope", "start_above": 0.5, "stop_below": 0.5}
        r = await client.put(f"/api/live/stream/{stream_id}/cycle-config", json=bad)
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "body.signal_sensor"
        r = await client.put(
            f"/api/live/stream/{stream_id}/cycle-config",
            json={**bad, "signal_sensor": "cycle_active", "stop_below": 0.9},
        )
        assert r.status_code == 422  # hysteresis the wrong way round
        r = await client.put(
            f"/api/live/stream/{stream_id}/cycle-config",
            json={**bad, "signal_sensor": "cycle_active"},
        )
        assert r.status_code == 200
        await simulate(bus, model, SimulateOptions(speed=0, frames=170))  # 4 cycles, the 4th faulty

        async def four() -> list | None:
            rows = (await client.get(f"/api/live/stream/{stream_id}/cycles")).json()
            done = [c for c in rows if c["state"] == "completed"]
            return done if len(done) == 4 else None

        cycles = list(reversed(await eventually(four, timeout=30)))
        assert all(c["health_score"] is None for c in cycles)  # no reference yet
        first = cycles[0]["cycle_id"]
        r = await client.get(f"/api/live/cycles/{first}/samples", params={"format": "csv"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == sum(cycles[0]["samples"].values())
        assert {row["sensor_id"] for row in rows} == set(cycles[0]["samples"])
        js = (await client.get(f"/api/live/cycles/{first}/samples")).json()
        assert len(js["sensors"]["pressure_1"]["values"]) == cycles[0]["samples"]["pressure_1"]

        async def analysis_ready() -> bool:
            return (await client.get(f"/api/live/stream/{stream_id}/references")).status_code == 200

        await eventually(analysis_ready)
        body = {"cycle_ids": [c["cycle_id"] for c in cycles[:2]], "description": "first two"}
        r = await client.post(f"/api/live/stream/{stream_id}/references", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["reference_version"] == 1
        assert r.json()["active"] is False
        r = await client.post(
            f"/api/live/stream/{stream_id}/references/dry-run",
            json={"reference_version": 1, "last_n": 4, "alert_below": 60},
        )
        assert r.status_code == 200, r.text
        dry = r.json()
        scores = {c["cycle_id"]: c for c in dry["cycles"]}
        assert scores[cycles[3]["cycle_id"]]["top_sensor"] == "flow_1"
        assert scores[cycles[3]["cycle_id"]]["health_score"] < 60
        assert scores[cycles[2]["cycle_id"]]["health_score"] > 85, scores[cycles[2]["cycle_id"]]
        assert dry["alerts"] == 1
        r = await client.post(f"/api/live/stream/{stream_id}/references/1/activate")
        assert r.status_code == 200
        assert r.json()["active"] is True
        r = await client.get(f"/api/live/stream/{stream_id}/references/1")
        (ref,) = r.json()
        curve = next(c for c in ref["curves"] if c["sensor_id"] == "pressure_1")
        # as many points as pressure_1 has samples in a cycle: 50 Hz x 2.8 s while cycle_active
        assert len(curve["mean"]) == 140
        assert all(
            lo <= m <= hi
            for lo, m, hi in zip(curve["lower"], curve["mean"], curve["upper"], strict=True)
        )

        r = await client.post(
            f"/api/live/stream/{stream_id}/references", json={"cycle_ids": ["nope"]}
        )
        assert r.status_code == 404
        assert r.json()["details"][0]["field"] == "cycle_ids"
        r = await client.post(f"/api/live/stream/{stream_id}/references/dry-run", json={})
        assert r.status_code == 422
        r = await client.get("/api/live/cycles/unknown-cycle")
        assert r.status_code == 404


async def test_a_cycle_report_downloads_as_pdf_and_csv(
    gateway: GatewayUrl, bus, common: CommonSettings, running, stream_id: str, tmp_path
) -> None:
    import shutil
    import subprocess

    from pypdf import PdfReader

    start_cycles_and_analysis(running, common)
    model = flow_offset_machine(stream_id)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        await client.post("/api/live/register", json=model.registration().model_dump(mode="json"))
        await client.put(f"/api/live/stream/{stream_id}/cycle-config", json=SIGNAL_TRIGGER)
        await simulate(bus, model, SimulateOptions(speed=0, frames=170))

        async def analysed() -> list | None:
            rows = (await client.get(f"/api/live/stream/{stream_id}/cycles")).json()
            done = [c for c in rows if c["health_score"] is not None]
            return done or None

        (faulty, *_) = await eventually(analysed, timeout=30)
        r = await client.get(f"/api/live/cycles/{faulty['cycle_id']}/report.pdf")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/pdf"
        pdf = tmp_path / "report.pdf"
        pdf.write_bytes(r.content)
        reader = PdfReader(pdf)
        text = reader.pages[0].extract_text()
        assert "VerTac cycle report" in text
        assert faulty["cycle_id"] in text
        assert "flow_1" in text  # the top sensor and its recommendation
        assert len(reader.pages) >= 3  # summary and two pages of overlays (7 sensors)
        if shutil.which("pdftoppm"):
            subprocess.run(
                [
                    "pdftoppm",
                    "-png",
                    "-r",
                    "40",
                    "-f",
                    "1",
                    "-l",
                    "2",
                    str(pdf),
                    str(tmp_path / "page"),
                ],
                check=True,
            )
            assert (tmp_path / "page-1.png").stat().st_size > 5_000
            assert (tmp_path / "page-2.png").stat().st_size > 5_000
        r = await client.get(f"/api/live/cycles/{faulty['cycle_id']}/analysis.csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert rows[0]["sensor_id"] == "flow_1"
        assert float(rows[0]["contribution_pct"]) > 50
        assert sum(float(row["contribution_pct"]) for row in rows) == pytest.approx(100, abs=0.1)

        # the report's chart data: ranked like the analysis, thinned, with the reference envelope
        cid = faulty["cycle_id"]
        r = await client.get(f"/api/live/cycles/{cid}/overlay", params={"points": 50})
        assert r.status_code == 200, r.text
        overlay = r.json()
        assert overlay["sensors"][0]["sensor_id"] == "flow_1"
        flow = overlay["sensors"][0]
        assert len(flow["t_s"]) == 50 and len(flow["value"]) == 50
        assert flow["unit"] == "l/min"
        assert flow["ref_mean"] and len(flow["ref_lower"]) == len(flow["ref_mean"])
        assert flow["ref_t_s"][-1] == pytest.approx(flow["t_s"][-1], rel=0.05)
        assert (await client.get("/api/live/cycles/nope/overlay")).status_code == 404

        # datasets: add, relabel (still once), list, remove; clear errors
        r = await client.post("/api/live/datasets/bad name/cycles", json={"cycle_id": cid})
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "dataset"
        r = await client.post("/api/live/datasets/faults/cycles", json={"cycle_id": "nope"})
        assert r.status_code == 404
        assert r.json()["details"][0]["field"] == "body.cycle_id"
        for label in ("offset", "flow offset"):
            body = {"cycle_id": cid, "label": label, "note": "injected"}
            r = await client.post("/api/live/datasets/faults/cycles", json=body)
            assert r.status_code == 201, r.text
        (entry,) = (await client.get("/api/live/datasets/faults")).json()
        assert (entry["label"], entry["stream_id"]) == ("flow offset", stream_id)
        assert entry["health_score"] == pytest.approx(faulty["health_score"])
        listed = {d["dataset"]: d for d in (await client.get("/api/live/datasets")).json()}
        assert listed["faults"]["cycles"] == 1
        assert listed["faults"]["labels"] == {"flow offset": 1}
        r = await client.delete(f"/api/live/datasets/faults/cycles/{cid}")
        assert r.status_code == 204
        assert (await client.get("/api/live/datasets/faults")).status_code == 404
        r = await client.delete(f"/api/live/datasets/faults/cycles/{cid}")
        assert r.status_code == 404


async def test_a_streams_status_follows_its_cycles_from_the_cycle_events(
    gateway: GatewayUrl, common: CommonSettings, running, stream_id: str
) -> None:
    """The gateway says whether a cycle runs from the cycles service's events, not from that
    service's private state (its bus user may not read the state bucket)."""
    start_cycles_and_analysis(running, common)
    model = build_machine(stream_id=stream_id, sensors=2, rate_hz=10, cycle_s=4)
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        r = await client.post(
            "/api/live/register", json=model.registration().model_dump(mode="json")
        )
        assert r.status_code in (200, 201), r.text

        async def state() -> str:
            r = await client.get(f"/api/live/stream/{stream_id}/status")
            assert r.status_code == 200, r.text
            return str(r.json()["cycle_state"])

        assert await state() == "idle"
        r = await client.post("/api/live/cycle/start", params={"stream_id": stream_id})
        assert r.status_code == 202, r.text
        await eventually(lambda: _is(state(), "running"))
        r = await client.post("/api/live/cycle/stop", params={"stream_id": stream_id})
        assert r.status_code == 202, r.text
        await eventually(lambda: _is(state(), "idle"))


async def _is(value, expected: str) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected
