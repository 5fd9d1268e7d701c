"""The learned model of normal cycles (multiway PCA): limits, statistics, contributions."""

from __future__ import annotations

import numpy as np
import pytest

from services.analysis import mspc
from services.analysis.logic import CycleData, Params, analyse, build_reference, model_row
from services.common.references import reference_from_bytes, reference_to_bytes

NS = 1_000_000_000
N = 120
T = np.arange(N, dtype=np.int64) * NS // 2


def cycle(i: int, rng: np.random.Generator, *, break_link: float = 0.0) -> CycleData:
    """Two pressures that move together (a common load factor) and a temperature."""
    shape = np.sin(np.linspace(0, np.pi, N))
    load = rng.normal(1.0, 0.03)
    a = 100 * load * shape + rng.normal(0, 0.5, N)
    b = 50 * load * shape * (1 - break_link) + rng.normal(0, 0.25, N)
    temp = 40 + 0.2 * shape + rng.normal(0, 0.02, N)
    sensors = {"a": (T, a), "b": (T, b), "temp": (T, temp)}
    types = {"a": "pressure", "b": "pressure", "temp": "temperature"}
    return CycleData("s", f"c{i}", 0, int(T[-1]), sensors, sensor_types=types)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(7)
    ref = build_reference([cycle(i, rng) for i in range(3)], version=1, n_points=2000)
    rows = [*ref.members, *(model_row(cycle(10 + i, rng), ref, Params()) for i in range(27))]
    return ref, mspc.fit(mspc.layout_of(ref), np.array(rows)), rng


def test_a_reference_keeps_its_cycles_as_model_rows_through_storage(trained) -> None:
    ref, _, _ = trained
    assert ref.members is not None and ref.members.shape == (3, mspc.layout_of(ref).columns)
    again = reference_from_bytes(reference_to_bytes(ref))
    assert again.members is not None and np.array_equal(again.members, ref.members)


def test_no_model_from_too_few_cycles(trained) -> None:
    ref, _, _ = trained
    assert mspc.fit(mspc.layout_of(ref), ref.members) is None


def test_normal_cycles_stay_within_the_limits_about_as_often_as_the_limits_say(trained) -> None:
    ref, model, rng = trained
    assert model is not None and model.cycles == 30
    assert model.t2_limits[0] < model.t2_limits[1] and model.spe_limits[0] < model.spe_limits[1]
    ratios = [model.monitor(model_row(cycle(100 + i, rng), ref, Params())).ratio_99
              for i in range(200)]  # fmt: skip
    beyond = float(np.mean(np.asarray(ratios) > 1))
    assert beyond < 0.06, beyond  # 1 % in theory; small models are a little wider in practice


def test_a_broken_correlation_is_found_by_spe_and_blamed_on_its_sensors(trained) -> None:
    ref, model, rng = trained
    stats = model.monitor(model_row(cycle(999, rng, break_link=0.08), ref, Params()))
    assert stats.spe > stats.spe_limit_99, (stats.spe, stats.spe_limit_99)
    # a broken link shows in the residuals of both sensors of the link, not in the temperature
    assert stats.contributions["a"][0] + stats.contributions["b"][0] > 0.8, stats.contributions
    shares = [a for a, _ in stats.contributions.values()]
    assert abs(sum(shares) - 1) < 1e-9
    assert len(stats.points["b"]) == mspc.MAX_POINTS


def test_the_analysis_reports_the_model_and_says_when_it_is_still_learning(trained) -> None:
    ref, model, rng = trained
    learning = analyse(cycle(5, rng), ref)
    assert learning.model is not None and not learning.model.available
    assert "learning: 3 of the 5" in learning.model.note
    judged = analyse(cycle(6, rng, break_link=0.08), ref, model=model)
    assert judged.model is not None and judged.model.available
    assert judged.model.model_version == 30 and judged.model.ratio_99 > 1
    assert judged.model.contributions[-1].sensor_id == "temp"
    # the model feeds the score: the broken link costs health although each sensor alone looks
    # only a little off
    assert judged.health_score < analyse(cycle(6, rng, break_link=0.08), ref).health_score


def test_a_warm_up_is_not_a_fault_for_the_model_but_a_step_beyond_tolerance_is(trained) -> None:
    ref, model, rng = trained
    c = cycle(7, rng)
    t, v = c.sensors["temp"]

    def ratio(shift: float) -> float:
        shifted = CycleData(c.stream_id, "x", c.start_ns, c.end_ns,
                            {**c.sensors, "temp": (t, v + shift)}, sensor_types=c.sensor_types)  # fmt: skip
        return model.monitor(model_row(shifted, ref, Params())).ratio_99

    assert abs(ratio(0.5) - ratio(0.0)) < 0.1 * ratio(0.0)  # within the drift tolerance (1.2 °C)
    assert ratio(3.0) > 5


def test_the_report_says_what_the_model_says_or_why_it_has_nothing(trained) -> None:
    from services.gateway.report import model_lines

    ref, model, rng = trained
    (learning,) = model_lines(analyse(cycle(8, rng), ref))
    assert learning == "Learned model: learning: 3 of the 5 healthy cycles it needs"
    (judged,) = model_lines(analyse(cycle(9, rng, break_link=0.08), ref, model=model))
    assert judged.startswith("Learned model (30 cycles,") and "feeds the score" in judged
    assert ("99 % limit" in judged and "SPE from a " in judged) or "SPE from b " in judged
