"""The score and ranking on real cycles of a hydraulic test rig with labelled faults, at default
settings: the reference is what the automatic reference makes of the first healthy cycles."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.analysis.app import params_of
from services.analysis.config import Settings
from services.analysis.logic import analyse, build_reference
from tests.hydraulic import FAILING, HEALTHY, UNITS, auc, load_rig, rig_cycle, rig_scores

SETTINGS = Settings()


@pytest.fixture(scope="module")
def rig():
    return load_rig()


@pytest.fixture(scope="module")
def scores(rig):
    return rig_scores(rig, SETTINGS.auto_reference_cycles)


@pytest.fixture(scope="module")
def reference(rig):
    healthy = rig.rows(*HEALTHY, 0)[: SETTINGS.auto_reference_cycles]
    return build_reference([rig_cycle(rig, r) for r in healthy], version=1,
                           n_points=SETTINGS.n_points, params=params_of(SETTINGS),
                           units=UNITS)  # fmt: skip


def test_the_reference_cycles_score_healthy_against_their_own_reference(scores) -> None:
    assert min(scores.members) >= 95, scores.members


def test_healthy_cycles_score_high_even_while_warming_up(scores) -> None:
    assert min(scores.warming) >= 80, scores.warming  # operating-point drift is not a fault
    assert float(np.median(scores.healthy)) >= 85, scores.healthy


@pytest.mark.parametrize("component", sorted(FAILING))
def test_a_failing_component_is_told_from_healthy_cycles(scores, component: str) -> None:
    faulty = scores.by_level[FAILING[component]]
    assert auc(scores.healthy, faulty) >= 0.95, (component, faulty, scores.healthy)


@pytest.mark.parametrize(
    "level", [(20, 100, 0, 130), (100, 100, 1, 130), (100, 100, 0, 100)],
    ids=["cooler reduced", "pump weak leakage", "accumulator severely reduced"],
)  # fmt: skip
def test_reduced_conditions_are_told_from_healthy_cycles_too(scores, level) -> None:
    assert auc(scores.healthy, scores.by_level[level]) >= 0.95, scores.by_level[level]


@pytest.mark.parametrize(
    ("component", "levels"),
    [
        ("cooler", [(100, 100, 0, 130), (20, 100, 0, 130), (3, 100, 0, 130)]),
        ("valve", [(100, 100, 0, 130), (100, 80, 0, 130), (100, 73, 0, 130)]),
        ("pump", [(100, 100, 0, 130), (100, 100, 1, 130), (100, 100, 2, 130)]),
        (
            "accumulator",
            [(100, 100, 0, 130), (100, 100, 0, 115), (100, 100, 0, 100), (100, 100, 0, 90)],
        ),
    ],
)
def test_scores_fall_as_a_component_degrades(scores, component: str, levels) -> None:
    medians = [
        float(np.median(scores.healthy if lv == HEALTHY else scores.by_level[lv])) for lv in levels
    ]
    assert medians == sorted(medians, reverse=True), (component, medians)
    # healthy cycles spread over about 85-100 (the score is continuous), a failing component is
    # at least of high risk
    assert medians[-1] < 60, (component, medians)
    assert medians[0] - medians[-1] > 35, (component, medians)


@pytest.mark.parametrize(
    ("levels", "moved", "least"),
    [
        ((3, 100, 0, 130), {"CE", "CP", "TS1", "TS2", "TS3", "TS4"}, 0.9),  # the cooler's channels
        ((20, 100, 0, 130), {"CE", "CP", "TS1", "TS2", "TS3", "TS4"}, 0.9),
        ((100, 73, 0, 130), {"SE"}, 0.9),  # valve switching shows in the efficiency factor
        # severe lag moves SE by 2 samples of 60; one of its 5 cycles also has CE off
        ((100, 80, 0, 130), {"SE"}, 0.8),
        ((100, 100, 2, 130), {"SE"}, 0.9),  # internal leakage lowers efficiency
        ((100, 100, 0, 90), {"SE", "CP"}, 0.9),
    ],
)
def test_the_top_ranked_sensor_is_one_the_fault_moves(
    rig, reference, levels, moved, least: float
) -> None:
    params = params_of(SETTINGS)
    tops = Counter(
        analyse(rig_cycle(rig, r), reference, params).sensors[0].sensor_id
        for r in rig.rows(*levels)
    )
    share = sum(n for sensor, n in tops.items() if sensor in moved) / sum(tops.values())
    assert share >= least, tops
