"""The score and ranking on real cycles of a hydraulic test rig with labelled faults."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.analysis.logic import analyse, build_reference
from tests.hydraulic import UNITS, load_rig, rig_cycle


@pytest.fixture(scope="module")
def rig_and_reference():
    rig = load_rig()
    healthy = rig.rows(cooler=100, valve=100, pump=0, accumulator=130, stable=0)
    reference = build_reference(
        [rig_cycle(rig, r) for r in healthy], version=1, n_points=60, units=UNITS
    )
    return rig, reference


def scores(rig, reference, rows) -> list[float]:
    return [analyse(rig_cycle(rig, r), reference).health_score for r in rows]


def test_healthy_cycles_score_high_even_while_warming_up(rig_and_reference) -> None:
    rig, reference = rig_and_reference
    stable = scores(rig, reference, rig.rows(100, 100, 0, 130, 0))
    warming = scores(rig, reference, rig.rows(100, 100, 0, 130, 1))
    assert min(stable) > 90
    assert np.median(warming) > 80  # operating-point drift is not a fault


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
def test_scores_fall_as_a_component_degrades(rig_and_reference, component: str, levels) -> None:
    rig, reference = rig_and_reference
    medians = [float(np.median(scores(rig, reference, rig.rows(*lv)))) for lv in levels]
    assert medians == sorted(medians, reverse=True), (component, medians)
    assert medians[0] - medians[-1] > 40, (component, medians)


@pytest.mark.parametrize(
    ("levels", "moved"),
    [
        ((3, 100, 0, 130), {"CE", "CP", "TS1", "TS2", "TS3", "TS4"}),  # cooler: its own channels
        ((20, 100, 0, 130), {"CE", "CP", "TS1", "TS2", "TS3", "TS4"}),
        ((100, 73, 0, 130), {"SE"}),  # valve switching shows in the efficiency factor
        ((100, 80, 0, 130), {"SE"}),
        ((100, 100, 2, 130), {"SE"}),  # internal leakage lowers efficiency
        ((100, 100, 0, 90), {"SE", "CP"}),
    ],
)
def test_the_top_ranked_sensor_is_one_the_fault_moves(rig_and_reference, levels, moved) -> None:
    rig, reference = rig_and_reference
    tops = Counter(
        analyse(rig_cycle(rig, r), reference).sensors[0].sensor_id for r in rig.rows(*levels)
    )
    share = sum(n for sensor, n in tops.items() if sensor in moved) / sum(tops.values())
    assert share >= 0.9, tops
