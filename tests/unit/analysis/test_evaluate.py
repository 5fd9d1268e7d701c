"""``vertac evaluate`` at default settings: the rig's AUCs per method, the healthy cycles' score
spread and how early a slow drift is flagged. These are the figures docs/concepts/analysis.md gives."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge.simulator import Fault
from services.analysis import evaluate as ev
from services.analysis.app import params_of, trend_params_of
from services.analysis.config import Settings
from tests.conftest import REPO
from tests.hydraulic import FOLDER, load_rig

SETTINGS = Settings()
PARAMS = params_of(SETTINGS)


@pytest.fixture(scope="module")
def rig() -> ev.RigEvaluation:
    load_rig()  # skips with the reason when the data set is absent
    return ev.evaluate_rig(FOLDER, PARAMS, SETTINGS.auto_reference_cycles, SETTINGS.n_points)


def test_healthy_cycles_spread_below_100_with_a_high_median(rig) -> None:
    h = rig.healthy_scores()
    assert np.median(h) >= 85, h
    assert h.max() < 99.95 and h.max() - h.min() > 5, h  # a band, not a flat line at 100


def test_every_fault_level_that_moves_the_1hz_channels_is_told_apart_by_the_health_score(
    rig,
) -> None:
    # the valve at 90 % moves none of the 1 Hz channels; every other level does, the mildest
    # (valve 80 %, accumulator 115 bar) included
    moving = [lv for levels in ev.LEVELS.values() for lv in levels if lv != (100, 90, 0, 130)]
    for lv in moving:
        assert rig.auc(lv, "health") >= 0.95, (lv, rig.auc(lv, "health"))
    assert rig.auc((100, 100, 0, 100), "health") == 1.0  # accumulator severely reduced


def test_the_learned_model_finds_the_mild_faults_better_than_before(rig) -> None:
    for mild in ((100, 100, 0, 115), (100, 80, 0, 130)):
        assert rig.auc(mild, "model") >= 0.95, (mild, rig.auc(mild, "model"))
        assert rig.auc(mild, "health") > rig.auc(mild, "v0.15") + 0.1
    # every rated cycle has the model's view: none was judged blind
    assert all(r.result.model is not None and r.result.model.available for r in rig.healthy)


def test_a_slow_drift_is_flagged_well_before_it_scores_critical() -> None:
    found = ev.evaluate_drift(Fault.parse("pressure_1:drift:0.1:10"), PARAMS,
                              trend_params_of(SETTINGS), SETTINGS.auto_reference_cycles,
                              SETTINGS.n_points)  # fmt: skip
    assert found.first_critical is not None and found.first_flagged is not None
    assert found.lead is not None and found.lead >= 5, found
    assert found.first_alert is not None and found.first_alert < found.first_critical
    assert found.forecast_error is not None
    healthy = [s for s in found.scores[:13] if s is not None]  # before the drift shows
    assert min(healthy) >= 85, healthy


def test_a_healthy_machine_is_not_flagged_over_a_long_run() -> None:
    # 300 cycles of 10 s: its operating point drifts (as the simulator's does by default), which
    # the learned model learns; no trend alert, no medium risk
    found = ev.evaluate_drift(Fault.parse("pressure_1:drift:0:10"), PARAMS,
                              trend_params_of(SETTINGS), SETTINGS.auto_reference_cycles,
                              SETTINGS.n_points, cycles=300)  # fmt: skip
    scores = np.array([s for s in found.scores if s is not None])
    assert found.first_flagged is None, (found.first_flagged, found.flagged_by)
    assert np.median(scores) >= 85 and scores.max() < 99.95, scores


def test_the_command_prints_the_tables_and_says_when_the_data_is_missing(tmp_path) -> None:
    def vertac(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "evaluate", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip

    missing = vertac("--data", str(tmp_path))
    assert missing.returncode == 2 and "no hydraulic rig data at" in missing.stderr
    bad = vertac("--no-rig", "--fault", "pressure_1:wobble:1")
    assert bad.returncode == 2 and "expected sensor:kind" in bad.stderr
    drift = vertac("--no-rig", "--cycles", "100")
    assert drift.returncode == 0, drift.stderr
    assert "first scored critical: cycle" in drift.stdout and "first flagged: cycle" in drift.stdout
    assert "The same machine without the fault, " in drift.stdout
    if (FOLDER / "profile.txt").exists():
        full = vertac("--data", str(FOLDER), "--cycles", "60")
        assert full.returncode == 0, full.stderr
        assert "| accumulator | 100/100/0/115 |" in full.stdout and "AUC naive z" in full.stdout
