"""Readable advice per deviating sensor, keyed by sensor type and pattern, with the evidence."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from schemas.messages import (
    Recommendation,
    SensorDeviation,
)

Array = npt.NDArray[np.float64]

_ADVICE: dict[tuple[str, str], str] = {
    ("temperature", "offset"): "Temperature level is off: check the cooler, coolant flow and fan.",
    ("temperature", "drift"): "Temperature keeps rising within the cycle: check cooling capacity.",
    ("pressure", "offset"): "Pressure level is off: check the relief valve setting and the pump.",
    ("pressure", "lag"): "Pressure builds late: check valve switching and the accumulator charge.",
    ("pressure", "spike"): "Pressure spikes: check for hydraulic shocks and valve chatter.",
    ("pressure", "shape"): "Pressure curve changed shape: check valves, pump and accumulator.",
    ("flow", "offset"): "Flow is off: check pump wear and internal leakage.",
    ("flow", "lag"): "Flow reacts late: check the control valve response.",
    ("vibration", "noise"): "Vibration got noisier: inspect bearings, coupling and mounting.",
    ("vibration", "offset"): "Vibration level rose: inspect the pump and motor bearings.",
    ("position", "lag"): "The axis moves late: check valve response and the drive.",
    ("power", "offset"): "Power draw changed: check for friction, leakage or a failing motor.",
    ("efficiency", "shape"): "Efficiency curve changed: check valve switching and pump leakage.",
    ("efficiency", "offset"): "Efficiency dropped: check pump leakage and the cooler.",
}
_GENERIC: dict[str, str] = {
    "offset": "The level is shifted: check the sensor's calibration and the process set point.",
    "drift": "The value drifts within the cycle: check for heating, wear or a loosening part.",
    "spike": "Short spikes: check wiring, grounding and sudden mechanical events.",
    "lag": "The signal runs late: check actuator response and control timing.",
    "noise": "More noise than usual: check wiring and shielding, then mechanical wear.",
    "shape": "The signal's shape changed: compare with the reference to find the phase.",
}


def recommendations(deviations: list[SensorDeviation]) -> list[Recommendation]:
    """Advice for each sensor that matters (contribution ≥ 10 %) and deviates."""
    out = []
    for d in deviations:
        if d.pattern == "normal" or d.contribution < 10:
            continue
        text = _ADVICE.get((d.sensor_type, d.pattern)) or _GENERIC[d.pattern]
        unit = f" {d.unit}" if d.unit else ""
        evidence = (
            f"{d.sensor_id}: {d.pattern}, offset {d.offset:+.3g}{unit} "
            f"({d.offset_z:.1f}x tolerance), shape {d.shape_z:.1f}x normal spread, "
            f"max deviation {d.max_deviation:.3g}{unit} at {d.max_deviation_at_s:.1f} s, "
            f"{d.outside_envelope_share:.0%} outside the envelope, "
            f"timing share {d.timing_share:.0%}, contribution {d.contribution:.0f} %"
        )
        out.append(
            Recommendation(sensor_id=d.sensor_id, pattern=d.pattern, text=text, evidence=evidence)
        )
    return out
