"""References ("golden" cycles) as arrays, and their storage form in ``live_references.data``.

Shared by the analysis service (which builds and uses them) and the alerts service (whose
envelope rule checks a running cycle against them). Storage: a compressed ``.npz`` with, per
sensor ``i``, ``mean_i``, ``spread_i`` and ``cover_i`` on the common base, and ``meta`` (JSON:
stream, version, duration, and per sensor its level spread, type, unit and registered name).

A reference outlives the sensor ids it was built with: a client that registers the same sensors
under new ids (a v0.2.0 client makes new uuids each time) keeps it, as :func:`matched` finds
each sensor again by its name.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


# slow sensors: their operating point drifts over hours (warm-up) without anything being wrong
SLOW_TYPES = frozenset({"temperature", "humidity", "level"})


@dataclass(frozen=True, slots=True)
class SensorReference:
    """Reference of one sensor on the common base."""

    sensor_id: str
    mean: Array
    spread: Array  # normal per-point spread (already floored)
    level_spread: float  # spread of per-cycle mean levels among the reference cycles
    sensor_type: str = "generic"
    unit: str = ""
    coverage: npt.NDArray[np.bool_] | None = None  # points every reference cycle had data for
    noise: float = 0.0  # measurement noise of the reference cycles on this base (0: unknown)
    name: str = ""  # the sensor's registered name when the reference was built ("" unknown)


@dataclass(frozen=True, slots=True)
class Reference:
    stream_id: str
    version: int
    duration_s: float
    sensors: dict[str, SensorReference]
    # the reference's own cycles as rows of the learned model (services.analysis.mspc), in the
    # order of ``sensors``; None for a reference built before the model existed
    members: npt.NDArray[np.float64] | None = None

    @property
    def n_points(self) -> int:
        """The longest sensor base (each sensor has as many points as it has real samples in a
        cycle, up to the analysis' ``n_points``)."""
        return max(len(r.mean) for r in self.sensors.values())


def reference_to_bytes(reference: Reference) -> bytes:
    """A reference as a compressed ``.npz``: per sensor its mean and spread, plus metadata."""
    meta = {
        "stream_id": reference.stream_id,
        "version": reference.version,
        "duration_s": reference.duration_s,
        "sensors": {
            sid: {
                "level_spread": r.level_spread,
                "sensor_type": r.sensor_type,
                "unit": r.unit,
                "noise": r.noise,
                "name": r.name,
            }
            for sid, r in reference.sensors.items()
        },
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    }
    for i, r in enumerate(reference.sensors.values()):
        arrays[f"mean_{i}"] = r.mean
        arrays[f"spread_{i}"] = r.spread
        if r.coverage is not None:
            arrays[f"cover_{i}"] = r.coverage
    if reference.members is not None:
        arrays["members"] = reference.members
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def reference_from_bytes(data: bytes) -> Reference:
    """The reference stored by :func:`reference_to_bytes`."""
    with np.load(io.BytesIO(data)) as npz:
        meta = json.loads(npz["meta"].tobytes())
        sensors = {
            sid: SensorReference(
                sensor_id=sid,
                mean=npz[f"mean_{i}"],
                spread=npz[f"spread_{i}"],
                level_spread=float(info["level_spread"]),
                sensor_type=str(info["sensor_type"]),
                unit=str(info["unit"]),
                coverage=npz[f"cover_{i}"] if f"cover_{i}" in npz.files else None,
                noise=float(info.get("noise", 0.0)),
                name=str(info.get("name", "")),
            )
            for i, (sid, info) in enumerate(meta["sensors"].items())
        }
        members = npz["members"] if "members" in npz.files else None
    return Reference(
        meta["stream_id"], int(meta["version"]), float(meta["duration_s"]), sensors, members
    )


def with_names(reference: Reference, names: dict[str, str]) -> Reference:
    """``reference`` with each sensor's registered name (``names``: id -> name)."""
    sensors = {sid: replace(r, name=names.get(sid, r.name)) for sid, r in reference.sensors.items()}
    return replace(reference, sensors=sensors)


def matched(reference: Reference, registered: dict[str, str]) -> tuple[Reference, int]:
    """``reference`` on today's sensor ids (``registered``: id -> name), and how many of its
    sensors are registered today. A sensor whose id is gone is found again by its name, when
    exactly one registered sensor that the reference does not hold already bears it."""
    by_name: dict[str, list[str]] = {}
    for sid, name in registered.items():
        if name and sid not in reference.sensors:
            by_name.setdefault(name, []).append(sid)
    own_names = [r.name for r in reference.sensors.values()]
    sensors: dict[str, SensorReference] = {}
    found = 0
    for sid, r in reference.sensors.items():
        if sid in registered:
            sensors[sid] = r
            found += 1
            continue
        candidates = by_name.get(r.name, []) if r.name and own_names.count(r.name) == 1 else []
        if len(candidates) == 1:
            new_id = candidates[0]
            sensors[new_id] = replace(r, sensor_id=new_id)
            found += 1
        else:
            sensors[sid] = r
    return replace(reference, sensors=sensors), found
