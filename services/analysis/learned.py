"""What the learned model of normal cycles (:mod:`services.analysis.mspc`) says of a cycle, and
whether it may learn from it. Pure; no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from schemas.messages import (
    AnalysisCompleted,
    ModelContribution,
    ModelLevel,
    ModelStats,
)
from services.analysis import mspc
from services.analysis.cycle import CycleData, Params
from services.analysis.reference import model_row
from services.common.references import (
    Reference,
)

Array = npt.NDArray[np.float64]


def model_stats(
    model: mspc.Model, row: Array, reference_version: int, version: int | None = None
) -> ModelStats:
    """What the model says of one cycle's row (``version``: how many cycles it learnt from in
    all; by default its training rows)."""
    got = model.monitor(row)
    order = sorted(got.contributions.items(), key=lambda kv: kv[1][0], reverse=True)
    return ModelStats(
        available=True,
        reference_version=reference_version,
        model_version=model.cycles if version is None else version,
        components=model.k,
        t2=got.t2,
        t2_limit_95=got.t2_limit_95,
        t2_limit_99=got.t2_limit_99,
        spe=got.spe,
        spe_limit_95=got.spe_limit_95,
        spe_limit_99=got.spe_limit_99,
        ratio_99=got.ratio_99,
        level=ModelLevel(
            components=got.level.components,
            t2=got.level.t2,
            t2_limit_95=got.level.t2_limit_95,
            t2_limit_99=got.level.t2_limit_99,
            spe=got.level.spe,
            spe_limit_95=got.level.spe_limit_95,
            spe_limit_99=got.level.spe_limit_99,
        ),
        contributions=[
            ModelContribution(sensor_id=sid, spe_share=a, t2_share=b, points=got.points[sid])
            for sid, (a, b) in order
        ],
    )


def judged_by_model(
    cycle: CycleData,
    reference: Reference,
    model: mspc.Model | None,
    params: Params,
    learnt: int | None = None,
) -> ModelStats:
    """The learned model's view of a cycle, or why it has none (``learnt``: how many cycles the
    model has learnt from in all, its version; by default its training rows, or the reference's
    own cycles while there is no model)."""
    if learnt is None:
        own = 0 if reference.members is None else len(reference.members)
        learnt = model.cycles if model is not None else own

    def without(note: str) -> ModelStats:
        return ModelStats(available=False, note=note, reference_version=reference.version,
                          model_version=learnt)  # fmt: skip

    if model is None:
        return without(f"learning: {learnt} of the {mspc.MIN_CYCLES} healthy cycles it needs")
    if cycle.aborted:
        return without("an aborted cycle is not judged by the model")
    row = model_row(cycle, reference, params)
    if row is None or not model.layout.readable(row[None, :]):
        return without("the cycle lacks a sensor of the model")
    return model_stats(model, row, reference.version, learnt)


def learns_from(result: AnalysisCompleted) -> bool:
    """Whether the model may learn from this cycle: complete, comparable, of low risk, and (once
    there is a model) within its 95 % limits, so that a slowly growing fault is not learnt."""
    if not result.comparable or result.aborted or result.qualified or result.risk_class != "low":
        return False
    m = result.model
    if m is None or not m.available:
        return True
    assert m.t2 is not None
    assert m.spe is not None
    lv = m.level
    level_ok = lv is None or (lv.t2 <= lv.t2_limit_95 and lv.spe <= lv.spe_limit_95)
    return m.t2 <= (m.t2_limit_95 or 0) and m.spe <= (m.spe_limit_95 or 0) and level_ok
