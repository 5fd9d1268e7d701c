"""The hydraulic test-rig cycles from ../shared/data/hydraulic-1hz, for tests (skips when absent)."""

from __future__ import annotations

import numpy as np
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
