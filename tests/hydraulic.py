"""Loading the hydraulic test-rig cycles from ../shared/data/hydraulic-1hz (skips when absent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from services.analysis.logic import CycleData
from tests.conftest import SHARED_DATA

FOLDER = SHARED_DATA / "hydraulic-1hz"
SENSORS = {
    "TS1": ("temperature", "°C"), "TS2": ("temperature", "°C"), "TS3": ("temperature", "°C"),
    "TS4": ("temperature", "°C"), "VS1": ("vibration", "mm/s"), "CE": ("efficiency", "%"),
    "CP": ("power", "kW"), "SE": ("efficiency", "%"),
}  # fmt: skip
NS = 1_000_000_000


@dataclass(frozen=True)
class Rig:
    values: dict[str, np.ndarray]  # sensor -> (cycles, 60)
    profile: np.ndarray  # (cycles, 5): cooler, valve, pump leakage, accumulator, stable flag
    original: np.ndarray  # original cycle numbers

    def rows(self, cooler=None, valve=None, pump=None, accumulator=None, stable=None) -> np.ndarray:
        mask = np.ones(len(self.profile), dtype=bool)
        for col, want in enumerate((cooler, valve, pump, accumulator, stable)):
            if want is not None:
                mask &= self.profile[:, col] == want
        return np.flatnonzero(mask)

    def cycle(self, row: int, stream_id: str = "hydraulic-rig") -> CycleData:
        start = int(self.original[row]) * 60 * NS
        t = start + np.arange(60, dtype=np.int64) * NS
        return CycleData(
            stream_id=stream_id,
            cycle_id=f"rig-{int(self.original[row])}",
            start_ns=start,
            end_ns=start + 59 * NS,
            sensors={s: (t, self.values[s][row]) for s in SENSORS},
            sensor_types={s: kind for s, (kind, _) in SENSORS.items()},
        )


def load_rig() -> Rig:
    if not (FOLDER / "profile.txt").exists():
        pytest.skip(f"hydraulic data set not found at {FOLDER} (it lives in the shared folder)")
    return Rig(
        values={s: np.loadtxt(FOLDER / f"{s}.txt") for s in SENSORS},
        profile=np.loadtxt(FOLDER / "profile.txt").astype(int),
        original=np.loadtxt(FOLDER / "cycle_index.txt").astype(int),
    )
