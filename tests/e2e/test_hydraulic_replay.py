"""Real hydraulic-rig cycles replayed through the running system at default settings: the first
healthy cycles become the automatic reference, then every cycle is scored and ranked."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from edge.replay import replay_hydraulic
from schemas.messages import AnalysisCompleted
from services.analysis.app import serve as serve_analysis
from services.analysis.config import Settings as AnalysisSettings
from services.common.config import CommonSettings
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.hydraulic import load_rig

pytestmark = pytest.mark.e2e

GROUPS = {
    # name: (conditions, channels the fault really moves)
    "healthy": ((100, 100, 0, 130, 1), None),
    "cooler close to failure": ((3, 100, 0, 130, None), {"CE", "CP", "TS1", "TS2", "TS3", "TS4"}),
    "valve close to failure": ((100, 73, 0, 130, None), {"SE"}),
    "severe pump leakage": ((100, 100, 2, 130, None), {"SE"}),
    "accumulator close to failure": ((100, 100, 0, 90, None), {"SE", "CP"}),
}


async def test_replayed_rig_cycles_are_scored_and_ranked_by_the_running_system(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    rig = load_rig()
    results: dict[str, AnalysisCompleted] = {}

    async def on_result(msg) -> None:
        r = AnalysisCompleted.model_validate_json(msg.data)
        results[r.cycle_id] = r

    await bus.nc.subscribe(f"vertac.analysis.{stream_id}", cb=on_result)
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    running.start(serve_cycles(CyclesSettings(metrics_port=0), common, running.stop))
    settings = AnalysisSettings(metrics_port=0)  # every analysis setting at its default
    running.start(serve_analysis(settings, common, running.stop))
    stable = rig.rows(100, 100, 0, 130, 0).tolist()  # the five healthy, stable cycles
    reference_rows = stable[: settings.auto_reference_cycles]  # become the automatic reference
    plan: list[tuple[str, int]] = [("healthy", r) for r in stable[settings.auto_reference_cycles :]]
    for name, (conditions, _) in GROUPS.items():
        plan += [(name, int(r)) for r in rig.rows(*conditions)[:4]]
    await replay_hydraulic(bus, rig, reference_rows + [r for _, r in plan], stream_id=stream_id)

    async def all_analysed() -> bool:
        return len(results) == len(plan)

    await eventually(all_analysed, timeout=90)
    ordered = sorted(results.values(), key=lambda r: r.cycle_id)
    by_group: dict[str, list[AnalysisCompleted]] = defaultdict(list)
    for (name, _), result in zip(plan, ordered, strict=True):
        by_group[name].append(result)
    healthy = float(np.median([r.health_score for r in by_group["healthy"]]))
    assert healthy >= 85, [r.health_score for r in by_group["healthy"]]
    assert min(r.health_score for r in by_group["healthy"]) >= 80
    for name, (_, moved) in GROUPS.items():
        if moved is None:
            continue
        scores = [r.health_score for r in by_group[name]]
        assert max(scores) < healthy - 20, (name, scores, healthy)
        tops = [r.sensors[0].sensor_id for r in by_group[name]]
        assert all(t in moved for t in tops), (name, tops)
    assert all(r.reference_version == 1 for r in ordered)
