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
    judged, level = model_lines(analyse(cycle(9, rng, break_link=0.08), ref, model=model))
    assert judged.startswith("Learned model (30 cycles,") and "feeds the score" in judged
    assert level.startswith("Operating point (the sensors' levels") and "99 % limit" in level
    assert ("99 % limit" in judged and "SPE from a " in judged) or "SPE from b " in judged


def _shifted(c: CycleData, name: str, shift: float) -> CycleData:
    t, v = c.sensors[name]
    return CycleData(c.stream_id, f"{c.cycle_id}+{name}", c.start_ns, c.end_ns,
                     {**c.sensors, name: (t, v + shift)}, sensor_types=c.sensor_types)  # fmt: skip


def test_a_level_off_the_healthy_operating_line_is_found_though_each_sensor_is_in_tolerance(
    trained,
) -> None:
    from services.analysis.reference import offset_tolerance

    ref, model, rng = trained
    tol = offset_tolerance(ref.sensors["a"], Params())
    off = analyse(_shifted(cycle(11, rng), "a", 0.9 * tol), ref, model=model)
    # on its own, a's level is within its tolerance ...
    (a,) = [d for d in off.sensors if d.sensor_id == "a"]
    assert a.offset_z < 1.0, a.offset_z
    # ... but a and b move their levels together (one load), and here only a moved: the
    # operating point left the healthy line; the link of a and b is blamed, not the temperature
    # (a residual off a line of two sensors shows on both)
    lv = off.model.level
    assert lv is not None and lv.spe > lv.spe_limit_99, lv
    shares = {c.sensor_id: c.spe_share for c in off.model.contributions}
    assert shares["a"] + shares["b"] > 0.8, shares
    # the same load change on both (along the line) stays within the limits
    c = cycle(12, rng)
    ta, va = c.sensors["a"]
    tb, vb = c.sensors["b"]
    both = CycleData(c.stream_id, "both", c.start_ns, c.end_ns,
                     {**c.sensors, "a": (ta, va * 1.04), "b": (tb, vb * 1.04)},
                     sensor_types=c.sensor_types)  # fmt: skip
    along = analyse(both, ref, model=model).model.level
    assert along is not None and along.spe < along.spe_limit_99, along
    assert along.t2 < along.t2_limit_99, along


def test_rows_of_another_format_are_never_mixed_into_a_model(trained) -> None:
    ref, _, _ = trained
    layout = mspc.layout_of(ref)
    rows = np.array(ref.members)
    assert layout.readable(rows)
    earlier = rows.copy()
    earlier[:, 0] = 1.0  # as an earlier release wrote them
    assert not layout.readable(earlier) and not layout.readable(rows[:, 1:])
    assert mspc.fit(layout, np.vstack([earlier] * 3)) is None


def test_the_leave_one_out_spe_refits_the_scaling_and_the_pca_without_the_row() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 30)) * rng.uniform(0.5, 3, 30)
    weights, floor, k = np.full(30, 0.5), np.full(30, 0.2), 3
    spe, residual2 = mspc.loo_spe(x, weights, floor, k)
    for i in (0, 5, 11):
        others = np.delete(x, i, axis=0)
        mean = others.mean(axis=0)
        scale = np.maximum(others.std(axis=0, ddof=1), floor) / weights
        pca = PCA(n_components=k).fit((others - mean) / scale)
        z = (x[i] - mean) / scale - pca.mean_
        e = z - (pca.components_ @ z) @ pca.components_
        assert spe[i] == pytest.approx(float(e @ e), rel=1e-9)
    assert residual2.shape == (30,) and residual2.sum() == pytest.approx(spe.mean(), rel=1e-9)
