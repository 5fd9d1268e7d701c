"""The cycle's deviation and health score, calibrated on the learned model's control limits (see
:mod:`services.analysis.logic`), and the risk class. Pure; no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from schemas.messages import (
    AnalysisCompleted,
    SensorDeviation,
)

Array = npt.NDArray[np.float64]

MODEL_D_AT_LIMIT = 2.0  # the model's 99 % control limit counts as this deviation D_m
MODEL_D_NORMAL = 1.4  # D_m of a typical normal cycle (its statistic at about half the limit)


def deviation(severities: list[float], model_ratio: float | None = None) -> float:
    """The cycle's deviation ``D`` (module docstring)."""
    sev = np.asarray(severities) if severities else np.zeros(1)
    d = 0.7 * float(sev.max()) + 0.3 * float(np.sqrt(np.mean(sev**2)))
    if model_ratio is not None:
        d = float(np.sqrt(d * d + model_excess(model_ratio)))
    return d


def level_free(severity: float, offset_z: float) -> float:
    """A sensor's severity with its level (offset) part counted only beyond its tolerance."""
    beyond = max(0.0, offset_z - 1.0)
    return float(np.sqrt(max(0.0, severity * severity - offset_z * offset_z) + beyond * beyond))


def scored_severities(sensors: list[SensorDeviation], model_ratio: float | None) -> list[float]:
    """The sensors' severities as the score counts them: whole while the learned model does not
    feed the score; without their level part once it does, since the model's operating point
    then judges the levels, together (a warm-up moves them along the line it learnt)."""
    if model_ratio is None:
        return [d.severity for d in sensors]
    return [level_free(d.severity, d.offset_z) for d in sensors]


def model_excess(model_ratio: float) -> float:
    """What the model adds to ``D²``: its ``D_m²`` beyond a typical normal cycle's."""
    return max(0.0, MODEL_D_AT_LIMIT**2 * max(model_ratio, 0.0) - MODEL_D_NORMAL**2)


def sensor_deviations(
    severities: dict[str, float],
    shares: dict[str, tuple[float, float]] | None = None,
    model_ratio: float | None = None,
) -> dict[str, float]:
    """Per sensor, its part of the cycle's deviation: its severity and, when the model fed the
    score, its share of the model's excess (from its SPE and T² contributions), in quadrature.
    The per-sensor health trend follows these, so it points at the sensor the model blames too."""
    if not shares or model_ratio is None:
        return dict(severities)
    weight = {s: max(0.0, a) + max(0.0, b) for s, (a, b) in shares.items()}
    total = sum(weight.values())
    excess = model_excess(model_ratio)
    out = {}
    for sid, sev in severities.items():
        part = excess * weight.get(sid, 0.0) / total if total > 0 else 0.0
        out[sid] = float(np.sqrt(sev * sev + part))
    return out


def result_deviations(result: AnalysisCompleted) -> dict[str, float]:
    """:func:`sensor_deviations` of an analysis result."""
    m = result.model
    fed = m is not None and m.feeds_score and m.ratio_99 is not None
    return sensor_deviations(
        {d.sensor_id: d.severity for d in result.sensors},
        {c.sensor_id: (c.spe_share, c.t2_share) for c in m.contributions} if fed and m else None,
        m.ratio_99 if fed and m else None,
    )


def score_of(d: float) -> float:
    """0-100 from the deviation ``D``: continuous and falling (module docstring)."""
    soft = float(np.logaddexp(0.0, 2.0 * (d - 1.5))) / 2.0
    return float(100.0 * np.exp(-soft / 4.0))


def health_score(severities: list[float], model_ratio: float | None = None) -> float:
    """0-100 from the sensors' severities and the model's statistics (module docstring)."""
    return score_of(deviation(severities, model_ratio))


def risk_class(score: float) -> str:
    if score >= 80:
        return "low"
    if score >= 60:
        return "medium"
    if score >= 40:
        return "high"
    return "critical"
