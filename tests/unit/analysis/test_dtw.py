"""The banded DTW kernel gives tslearn's results."""

from __future__ import annotations

import numpy as np
import pytest
from tslearn.barycenters import dtw_barycenter_averaging
from tslearn.metrics import dtw as tslearn_dtw
from tslearn.metrics import dtw_path as tslearn_path

from services.analysis.dtw import dtw_distance, dtw_path, refined_path
from services.analysis.reference import _dba, barycenter, medoid


@pytest.mark.parametrize(("n", "radius"), [(1, 0), (2, 1), (40, 0), (60, 3), (120, 12), (200, 199)])
def test_distance_and_path_equal_tslearn_with_a_sakoe_chiba_band(n: int, radius: int) -> None:
    rng = np.random.default_rng(n + radius)
    x, y = np.cumsum(rng.normal(size=n)), np.cumsum(rng.normal(size=n))
    expected = tslearn_dtw(x, y, global_constraint="sakoe_chiba", sakoe_chiba_radius=radius)
    assert dtw_distance(x, y, radius) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    path, distance = dtw_path(x, y, radius)
    t_path, t_distance = tslearn_path(
        x, y, global_constraint="sakoe_chiba", sakoe_chiba_radius=radius
    )
    assert distance == pytest.approx(t_distance, rel=1e-12, abs=1e-12)
    assert [tuple(p) for p in path] == [tuple(p) for p in t_path]
    assert np.all(np.abs(path[:, 0] - path[:, 1]) <= radius)


def test_a_pure_time_shift_has_small_dtw_and_large_euclidean() -> None:
    t = np.linspace(0, 1, 500)
    x = np.exp(-(((t - 0.40) / 0.05) ** 2))
    y = np.exp(-(((t - 0.45) / 0.05) ** 2))
    euclid = float(np.linalg.norm(x - y))
    assert dtw_distance(x, y, 50) < 0.05 * euclid


def test_barycenter_equals_tslearn_dba() -> None:
    rng = np.random.default_rng(5)
    base = np.sin(np.linspace(0, 3 * np.pi, 50))
    series = [np.roll(base, k) + rng.normal(0, 0.05, 50) for k in (-2, 0, 1, 3)]
    ours = barycenter(series, radius=5, max_iter=30, tol=1e-12)
    theirs = dtw_barycenter_averaging(
        np.stack(series)[:, :, None],
        init_barycenter=series[medoid(series, 5)][:, None],  # the same warm start
        max_iter=30,
        tol=1e-12,
        metric_params={"global_constraint": "sakoe_chiba", "sakoe_chiba_radius": 5},
    ).ravel()
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_the_warm_start_is_the_medoid() -> None:
    base = np.sin(np.linspace(0, 3 * np.pi, 60))
    series = [base, base + 0.1, base + 3.0]  # distances per point 0.1, 3 and 2.9
    assert medoid(series, 3) == 1


def test_series_of_different_length_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        dtw_distance(np.zeros(3), np.zeros(4), 1)


def test_a_path_refined_near_a_coarse_one_finds_the_banded_optimum() -> None:
    t = np.linspace(0, 1, 3000)
    x = np.tanh((t - 0.40) / 0.02) + np.sin(9 * t)
    y = np.tanh((t - 0.43) / 0.02) + np.sin(9 * t)
    f = 6
    coarse = [np.add.reduceat(s, np.arange(0, len(s), f)) / f for s in (x, y)]
    coarse_path, _ = dtw_path(coarse[0], coarse[1], 150 // f)
    path, d = refined_path(x, y, coarse_path, f, 150)
    assert d == pytest.approx(dtw_distance(x, y, 150), rel=1e-9)
    assert (np.abs(path[:, 0] - path[:, 1]) <= 150).all()
    assert (np.diff(path, axis=0) >= 0).all() and tuple(path[-1]) == (2999, 2999)


def test_a_long_barycenter_stays_close_to_full_resolution_dba() -> None:
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 3000)
    series = [np.clip((t - 0.2 - s) / 0.1, 0, 1) * 10 + rng.normal(0, 0.1, len(t))
              for s in (-0.004, 0.0, 0.003, 0.006)]  # fmt: skip
    multi = barycenter(series, radius=150)
    full = _dba(series, series[medoid(series, 150)], 150, 15, 1e-3)[0]
    # DBA has many fixed points; they may differ at a corner, not along the cycle
    assert np.median(np.abs(multi - full)) < 0.02 * np.ptp(full)
    cost = [np.mean([dtw_distance(b, x, 150) ** 2 for x in series]) for b in (multi, full)]
    assert cost[0] < 1.5 * cost[1], cost


@pytest.mark.parametrize(("n", "radius"), [(1, 0), (2, 1), (37, 5), (500, 25), (500, 499)])
def test_both_dtws_in_one_pass_are_the_two_of_them_to_the_bit(n: int, radius: int) -> None:
    from services.analysis.dtw import dtw_distance_and_path

    rng = np.random.default_rng(n)
    x, y = np.cumsum(rng.normal(size=n)), np.cumsum(rng.normal(size=n))
    flat = np.round(x / 4) * 4  # flat stretches: ties between the steps are frequent
    for a, b in ((x, y), (flat, np.round(y / 4) * 4)):
        u, v = a - a.mean(), b - b.mean()
        d, path, d_shape = dtw_distance_and_path(a, b, u, v, radius)
        expected_path, expected_shape = dtw_path(u, v, radius)
        assert d == dtw_distance(a, b, radius)
        assert d_shape == expected_shape
        assert np.array_equal(path, expected_path)
