"""A v0.1 batch workflow on real servers: recorded cycles imported from files (REST and CLI),
a live stream's reference built from a dataset, a dataset analysed as a batch on the CLI, and
the whole dataset exported (Parquet, zip of CSVs) and imported again."""

from __future__ import annotations

import asyncio
import io
import zipfile

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from edge.simulator import Fault, Simulation, build_machine
from schemas.frames import Frame
from services.analysis.app import serve as serve_analysis
from services.analysis.config import Settings as AnalysisSettings
from services.cli import app as cli
from services.common.config import CommonSettings
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings
from services.gateway.logic import recording_csv
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import GatewayUrl

pytestmark = pytest.mark.integration
NS = 1_000_000_000
CYCLE_S = 4


def cycle_frames(stream_id: str, count: int, faults: tuple[Fault, ...] = ()) -> list[Frame]:
    """``count`` recorded 4 s cycles of a 4-sensor 50 Hz machine."""
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=50, cycle_s=CYCLE_S,
                          drift_per_hour=0.0, jitter=0.003, faults=faults)  # fmt: skip
    sim = Simulation(model, 0)
    start = 1_767_225_600 * NS
    span = CYCLE_S * NS
    return [sim.frame(i, start + i * span, start + (i + 1) * span) for i in range(count)]


def zipped(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


def cli_env(common: CommonSettings) -> dict[str, str]:
    return {"VERTAC_NATS_URL": common.nats_url, "VERTAC_DATABASE_URL": common.database_url}


async def test_import_reference_batch_analysis_and_export(
    bus, gateway: GatewayUrl, common: CommonSettings, running, stream_id: str, tmp_path
) -> None:
    running.start(serve_analysis(AnalysisSettings(metrics_port=0, auto_reference_cycles=0),
                                 common, running.stop))  # fmt: skip
    # the cycles service stores imported cycles; ingest registers a new stream of them
    running.start(serve_cycles(CyclesSettings(metrics_port=0), common, running.stop))
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    published: list[bytes] = []

    async def on_analysis(msg) -> None:
        published.append(msg.data)

    await bus.nc.subscribe("vertac.analysis.>", cb=on_analysis)
    live = build_machine(stream_id=stream_id, sensors=4, rate_hz=50, cycle_s=CYCLE_S)
    golden = cycle_frames(f"{stream_id}-g", 4)
    faulty = cycle_frames(f"{stream_id}-f", 2, (Fault("flow_1", "offset", 6.0),))
    runner = CliRunner()
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=60) as client:
        r = await client.post("/api/live/register", json=live.registration().model_dump())
        assert r.status_code == 201, r.text

        # four recorded good cycles, one samples CSV each, zipped: imported over REST
        files = {f"good-{i}.csv": recording_csv(f) for i, f in enumerate(golden)}
        r = await client.post(
            "/api/live/datasets/golden/import",
            params={"label": "good", "filename": "golden.zip"},
            content=zipped(files),
        )
        assert r.status_code == 201, r.text
        answer = r.json()
        assert answer["stream_id"] == "batch-golden"
        assert [c["cycle_id"] for c in answer["cycles"]] == [f"golden.good-{i}" for i in range(4)]
        assert all(c["label"] == "good" and c["samples"] > 0 for c in answer["cycles"])
        # stored like a live cycle: its samples read back exactly as they were exported
        r = await client.get("/api/live/cycles/golden.good-1/samples", params={"format": "csv"})
        assert r.status_code == 200, r.text
        assert r.text == files["good-1.csv"]
        (entry, *_) = (await client.get("/api/live/datasets/golden")).json()
        assert entry["stream_id"] == "batch-golden" and entry["label"] == "good"

        # two faulty cycles in one long file with a cycle column, imported on the CLI
        lines = ["cycle_id,timestamp_ns,sensor_id,value,quality"]
        for k, f in enumerate(faulty):
            body = recording_csv(f).splitlines()[1:]
            lines += [f"run-{k}," + ",".join(row.split(",")[i] for i in (0, 2, 3, 4))
                      for row in body]  # fmt: skip
        path = tmp_path / "faults.csv"
        path.write_text("\n".join(lines) + "\n")
        result = await asyncio.to_thread(
            runner.invoke, cli, ["dataset", "import", "faults", str(path), "--label", "bad",
                                 "--stream", "batch-golden"], env=cli_env(common),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "imported 2 cycles into dataset faults" in result.output

        # a live stream's reference from the dataset's good cycles
        r = await client.post(f"/api/live/stream/{stream_id}/references",
                              json={"dataset": "golden", "label": "good", "activate": True})  # fmt: skip
        assert r.status_code == 201, r.text
        ref = r.json()
        assert ref["active"] is True
        assert sorted(ref["source_cycles"]) == [f"golden.good-{i}" for i in range(4)]
        assert ref["description"] == "built from dataset golden (good)"
        r = await client.post(f"/api/live/stream/{stream_id}/references",
                              json={"dataset": "nothing-here"})  # fmt: skip
        assert r.status_code == 404, r.text

        # the faulty dataset analysed as a batch against that reference, with a progress bar
        result = await asyncio.to_thread(
            runner.invoke, cli, ["dataset", "analyse", "faults", "--stream", stream_id],
            env=cli_env(common),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "analysed 2 cycles" in result.output
        for cid in ("faults.run-0", "faults.run-1"):
            detail = (await client.get(f"/api/live/cycles/{cid}")).json()
            a = detail["analysis"]
            assert a["health_score"] < 60, a["health_score"]
            assert a["sensors"][0]["sensor_id"] == "flow_1"
            assert a["details"]["reference_stream_id"] == stream_id
        assert published == []  # a batch analysis raises no live alerts

        # the whole dataset as one Parquet file, and as a zip of CSVs
        r = await client.get("/api/live/datasets/faults/export", params={"format": "parquet"})
        assert r.status_code == 200, r.text
        table = pq.read_table(io.BytesIO(r.content))
        assert set(table.column("cycle_id").to_pylist()) == {"faults.run-0", "faults.run-1"}
        assert table.num_rows == sum(s.n for f in faulty for s in f.series)
        assert max(table.column("health_score").to_pylist()) < 60
        r = await client.get("/api/live/datasets/faults/export", params={"format": "csv"})
        assert r.status_code == 200
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            names = set(z.namelist())
        assert {"faults.run-0.csv", "faults.run-0.analysis.csv", "dataset.csv"} <= names

        # and the exported Parquet file imports again
        exported = (await client.get("/api/live/datasets/golden/export")).content
        r = await client.post("/api/live/datasets/golden-copy/import",
                              params={"filename": "golden.parquet"}, content=exported)  # fmt: skip
        assert r.status_code == 201, r.text
        assert len(r.json()["cycles"]) == 4

        # bad files are refused, naming what is wrong
        r = await client.post("/api/live/datasets/bad/import", content=b"a,b\n1,2\n")
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "cycle.csv.columns"
        r = await client.post("/api/live/datasets/bad/import", params={"stream_id": stream_id},
                              content=b"timestamp,nope\n1,2\n")  # fmt: skip
        assert r.status_code == 422
        assert "does not register" in r.json()["error"]
        r = await client.get("/api/live/datasets/unknown/export")
        assert r.status_code == 404
