"""The hydraulic test-rig cycles from ../shared/data/hydraulic-1hz, for tests (skips when absent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from edge.replay import SENSORS, HydraulicData, load_hydraulic
from services.analysis.logic import CycleData
from tests.conftest import SHARED_DATA

FOLDER = SHARED_DATA / "hydraulic-1hz"
NS = 1_000_000_000
UNITS = {s: unit for s, (_, unit, _) in SENSORS.items()}
TYPES = {s: kind for s, (kind, _, _) in SENSORS.items()}


def load_rig() -> HydraulicData:
    if not (FOLDER / "profile.txt").exists():
        pytest.skip(f"hydraulic data set not found at {FOLDER} (it lives in the shared folder)")
    return load_hydraulic(FOLDER)


def rig_cycle(rig: HydraulicData, row: int, stream_id: str = "hydraulic-rig") -> CycleData:
    start = int(rig.original[row]) * 60 * NS
    t = start + np.arange(60, dtype=np.int64) * NS
    return CycleData(
        stream_id=stream_id,
        cycle_id=f"rig-{int(rig.original[row])}",
        start_ns=start,
        end_ns=start + 59 * NS,
        sensors={s: (t, rig.values[s][row]) for s in SENSORS},
        sensor_types=TYPES,
    )


# single-fault groups: every level of each component, the others healthy (cooler, valve, pump,
# accumulator); the first level of each is the mildest
HEALTHY = (100, 100, 0, 130)
LEVELS: dict[str, list[tuple[int, int, int, int]]] = {
    "cooler": [(20, 100, 0, 130), (3, 100, 0, 130)],
    "valve": [(100, 90, 0, 130), (100, 80, 0, 130), (100, 73, 0, 130)],
    "pump": [(100, 100, 1, 130), (100, 100, 2, 130)],
    "accumulator": [(100, 100, 0, 115), (100, 100, 0, 100), (100, 100, 0, 90)],
}
# each component's fault "close to total failure" (the README's words for the last level)
FAILING = {component: levels[-1] for component, levels in LEVELS.items()}


def auc(healthy: list[float], faulty: list[float]) -> float:
    """Probability that a healthy cycle scores higher than a faulty one (ties count half)."""
    h = np.asarray(healthy)[:, None]
    f = np.asarray(faulty)[None, :]
    return float(np.mean((h > f) + 0.5 * (h == f)))


@dataclass(frozen=True)
class RigRow:
    component: str
    level: str
    cycles: int
    median: float
    auc: float


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


def rig_auc_table(members: int | None = None) -> list[RigRow] | None:
    """The AUC table of ``make bench`` (None when the data set is absent)."""
    if not (FOLDER / "profile.txt").exists():
        return None
    from services.analysis.config import Settings

    rig = load_hydraulic(FOLDER)
    s = rig_scores(rig, members or Settings().auto_reference_cycles)
    rows = [
        RigRow("healthy", "reference cycles", len(s.members), float(np.median(s.members)), 0.5),
        RigRow("healthy", "others", len(s.healthy), float(np.median(s.healthy)), 0.5),
    ]
    for component, levels in LEVELS.items():
        for lv in levels:
            f = s.by_level[lv]
            if f:
                label = "/".join(str(x) for x in lv)
                rows.append(
                    RigRow(component, label, len(f), float(np.median(f)), auc(s.healthy, f))
                )
    return rows
