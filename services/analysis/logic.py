"""Comparing a cycle with its reference: pure numpy, no I/O, no clock.

Each sensor is put on its own base over the cycle (normalised time): as many points as it really
has samples in a cycle (its rate x the cycle's duration), at most ``n_points``, so a 1 Hz sensor is
judged on its 60 real samples and a 1 kHz one on ``n_points`` of its 10,000; nothing is compared on
interpolated points. Per sensor, with ``m`` the reference mean shape and ``s`` its per-point normal
spread (see :func:`normal_spread`):

- euclidean ``||x - m||``, DTW with a Sakoe-Chiba band (:mod:`services.analysis.dtw`);
- point-wise deviation: max, mean, where, share of points outside ``m ± k·s``;
- ``offset`` = mean(x) - mean(m), judged against a drift-aware tolerance (see
  :func:`offset_tolerance`), and the level-free ``shape_z`` = RMS((x - x̄) - (m - m̄)) / s;
- ``severity`` = sqrt(offset_z² + shape_z²) (about 1 for a normal cycle);
- timing vs magnitude from the warping path: of the squared Euclidean difference E², the part
  DTW removes (E² - DTW²) is timing, the rest magnitude.

The cycle's deviation ``D`` = 0.7·max(severity) + 0.3·RMS(severity): 1 is a sensor at its normal
spread. Once the learned model of normal cycles (:mod:`services.analysis.mspc`) learnt from
``model_feeds_from`` cycles, its own deviation ``D_m = 2·sqrt(r)`` (``r``: the larger of T² and
SPE over their 99 % control limits, so ``D_m`` = 2 at the limit and about 1.4 for a typical normal
cycle) is added in quadrature beyond the normal: ``D = sqrt(D² + max(0, D_m² - 1.4²))``. A cycle
both views find a little off is judged worse than one that only one finds a little off.

The health score is ``100 · exp(-softplus₂(D - 1.5) / 4)`` (``softplus₂(x) = ln(1 + e^(2x)) / 2``),
continuous and falling: 99 at D = 0, 96 at D = 1, 90 at D = 1.64, 85 at D = 2, 80 at D = 2.3,
60 at D = 3.5, 40 at D = 5.2. In terms of the control limits, with the sensors each within their
normal spread (D ≈ 1): a cycle at the model's 99 % limit scores 89, **80** means T² or SPE at 1.6
times its 99 % limit, **60** at 3.4 times and **40** at 6.9 times. Normal cycles spread over about
85-100 instead of all scoring 100, so a drift shows before it is a fault. Risk: low ≥ 80 > medium
≥ 60 > high ≥ 40 > critical.

A cycle with no data, or that compares fewer than ``min_compared_share`` (half) of its
reference's sensors, is *not comparable*: no score, risk ``unknown``, and the reason in
``qualification``. A score from what little was compared would look like a measurement of the
whole machine; it is not one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from schemas.messages import (
    AnalysisCompleted,
)
from services.analysis import mspc
from services.analysis.advice import recommendations
from services.analysis.compare import _Compared, compare_sensor, first_deviation
from services.analysis.cycle import CycleData, Params, cycle_from_recording, on_common_base
from services.analysis.learned import judged_by_model, learns_from, model_stats
from services.analysis.reference import build_reference, model_row
from services.analysis.score import (
    deviation,
    health_score,
    model_excess,
    result_deviations,
    risk_class,
    score_of,
    scored_severities,
    sensor_deviations,
)
from services.common.references import (
    Reference,
)

# the analysis' public names, wherever they are defined
__all__ = [
    "CycleData",
    "Params",
    "analyse",
    "build_reference",
    "cycle_from_recording",
    "deviation",
    "health_score",
    "learns_from",
    "model_excess",
    "model_row",
    "model_stats",
    "on_common_base",
    "result_deviations",
    "risk_class",
    "score_of",
    "sensor_deviations",
]

Array = npt.NDArray[np.float64]


def analyse(
    cycle: CycleData,
    reference: Reference,
    params: Params = Params(),
    model: mspc.Model | None = None,
    learnt: int | None = None,
) -> AnalysisCompleted:
    """Compare ``cycle`` with ``reference`` (and with the learned ``model`` of normal cycles,
    when there is one): metrics per sensor, ranking, score, advice."""
    base = on_common_base(cycle, reference)
    duration = reference.duration_s if cycle.aborted else cycle.duration_s
    usable = [(sid, x) for sid, x in base.items() if np.isfinite(x).sum() >= 2]

    def one(item: tuple[str, Array]) -> _Compared:
        return compare_sensor(item[1], reference.sensors[item[0]], duration, params)

    if params.workers > 1 and len(usable) > 1:
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            results = list(pool.map(one, usable))
    else:
        results = [one(item) for item in usable]
    compared = {sid: r for (sid, _), r in zip(usable, results, strict=True)}
    devs = [c.deviation for c in compared.values()]
    weights = np.array([d.severity**2 for d in devs])
    total = float(weights.sum())
    ranked = sorted(
        (
            d.model_copy(
                update={"contribution": 100.0 * w / total if total > 0 else 100.0 / len(devs)}
            )
            for d, w in zip(devs, weights, strict=True)
        ),
        key=lambda d: d.contribution,
        reverse=True,
    )
    missing = sorted(set(reference.sensors) - set(compared))
    needed = max(1, int(np.ceil(params.min_compared_share * len(reference.sensors))))
    comparable = len(compared) >= needed
    judged = judged_by_model(cycle, reference, model, params, learnt) if comparable else None
    feeds = (
        judged is not None and judged.available and judged.model_version >= params.model_feeds_from
    )
    ratio = judged.ratio_99 if feeds and judged is not None else None
    if feeds and judged is not None:
        judged = judged.model_copy(update={"feeds_score": True})
    score = health_score(scored_severities(ranked, ratio), ratio) if comparable else None
    notes = []
    if not comparable:
        notes.append(
            f"not comparable: {len(compared)} of the reference's {len(reference.sensors)} "
            f"sensors compared, at least {needed} needed"
            + ("" if cycle.sensors else "; the cycle has no data")
        )
    if cycle.completeness < params.qualify_below or cycle.gaps:
        notes.append(f"data {cycle.completeness:.0%} complete, {cycle.gaps} gaps")
    if missing:
        notes.append(f"no data for {', '.join(missing)}")
    if cycle.aborted:
        notes.append(f"cycle aborted ({cycle.end_reason}); compared over its recorded part")
    timing = (
        float(
            np.average(
                [d.timing_share for d in ranked], weights=[d.contribution + 1e-9 for d in ranked]
            )
        )
        if ranked
        else 0.0
    )
    return AnalysisCompleted(
        stream_id=cycle.stream_id,
        cycle_id=cycle.cycle_id,
        reference_version=reference.version,
        health_score=score,
        risk_class=risk_class(score) if score is not None else "unknown",
        comparable=comparable,
        aborted=cycle.aborted,
        end_reason=cycle.end_reason,
        qualified=bool(notes),
        qualification="; ".join(notes),
        duration_s=cycle.duration_s,
        reference_duration_s=reference.duration_s,
        timing_share=timing,
        sensors=ranked,
        first_deviation=first_deviation(compared, duration, params),
        recommendations=recommendations(ranked),
        model=judged,
    )
