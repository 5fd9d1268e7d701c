"""The hydraulic test-rig cycles from ../shared/data/hydraulic-1hz, for tests (skips when absent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from edge.replay import HydraulicData, load_hydraulic
from services.analysis.evaluate import HEALTHY, LEVELS, RIG_UNITS, auc, rig_cycle
from tests.conftest import SHARED_DATA

FOLDER = SHARED_DATA / "hydraulic-1hz"
UNITS = RIG_UNITS
__all__ = ["HEALTHY", "LEVELS", "UNITS", "auc", "load_rig", "rig_cycle", "rig_scores"]


def load_rig() -> HydraulicData:
    if not (FOLDER / "profile.txt").exists():
        pytest.skip(f"hydraulic data set not found at {FOLDER} (it lives in the shared folder)")
    return load_hydraulic(FOLDER)


# each component's fault "close to total failure" (the README's words for the last level)
FAILING = {component: levels[-1] for component, levels in LEVELS.items()}


@dataclass(frozen=True)
class RigScores:
    """Scores of the rig's cycles against a reference of its first healthy stable cycles."""

    members: list[float]  # the reference's own cycles
    healthy: list[float]  # every other healthy cycle (stable or still warming up)
    warming: list[float]  # the healthy cycles whose conditions were not yet stable
    by_level: dict[tuple[int, int, int, int], list[float]]


def rig_scores(rig: HydraulicData, members: int) -> RigScores:
    """Every analysis setting at its default; the reference is what the automatic reference
    makes of the first ``members`` healthy stable cycles."""
    from services.analysis.app import params_of
    from services.analysis.config import Settings
    from services.analysis.logic import analyse, build_reference

    settings = Settings()
    params = params_of(settings)
    stable = rig.rows(*HEALTHY, 0)
    chosen = stable[:members]
    reference = build_reference([rig_cycle(rig, r) for r in chosen], version=1,
                                n_points=settings.n_points, params=params, units=UNITS)  # fmt: skip

    def scores(rows: npt.NDArray[np.int64]) -> list[float]:
        return [analyse(rig_cycle(rig, r), reference, params).health_score for r in rows]

    others = [r for r in rig.rows(*HEALTHY) if r not in set(chosen)]
    return RigScores(
        members=scores(chosen),
        healthy=scores(np.asarray(others, dtype=np.int64)),
        warming=scores(rig.rows(*HEALTHY, 1)),
        by_level={lv: scores(rig.rows(*lv)) for levels in LEVELS.values() for lv in levels},
    )
