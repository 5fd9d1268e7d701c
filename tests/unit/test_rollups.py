"""Rollups of a batch of frames against a plain Python reckoning of the same samples."""

from __future__ import annotations

import math

import numpy as np

from schemas.frames import Frame, Series
from services.common.rollups import rollups, samples_of

S = 1_000_000_000


def test_rollups_match_a_plain_reckoning_across_frames_nan_and_bad_quality() -> None:
    rng = np.random.default_rng(3)
    frames = []
    for k in range(6):  # 6 frames of 700 ms, 100 Hz: buckets of 1 s span two or three frames
        t = (k * 700 + np.arange(70) * 10) * 1_000_000 + 5 * S
        v = rng.normal(size=70)
        v[3] = np.nan
        q = np.full(70, 192, dtype=np.uint8)
        q[5:8] = 0
        frames.append(
            Frame(
                "press-1",
                k,
                (Series("p", v, int(t[0]), 0, t, q), Series("t", v * 2, int(t[0]), 10_000_000)),
            )
        )
    samples = samples_of(frames[::-1])  # any order of frames
    got = rollups(samples, S)
    rows = {(got.sensor_id[i], int(got.bucket_ns[i])): i for i in range(len(got))}
    # the plain reckoning
    expected: dict[tuple[str, int], list[tuple[int, float, int]]] = {}
    for f in frames:
        for s in f.series:
            for t, v, q in zip(
                s.timestamps().tolist(), s.values.tolist(), s.qualities().tolist(), strict=True
            ):
                expected.setdefault((s.sensor_id, t // S * S), []).append((t, v, q))
    assert set(rows) == set(expected)
    for key, items in expected.items():
        i = rows[key]
        values = [v for _, v, _ in items if math.isfinite(v)]
        assert got.stream_id[i] == "press-1"
        assert got.n[i] == len(items)
        assert got.n_bad[i] == sum(q != 192 for _, _, q in items)
        assert got.n_values[i] == len(values)
        assert got.min[i] == min(values) and got.max[i] == max(values)
        assert math.isclose(got.sum[i], sum(values), rel_tol=1e-12, abs_tol=1e-12)
        last = max(items)
        assert got.last_ns[i] == last[0]
        assert got.last[i] == last[1] or (math.isnan(got.last[i]) and math.isnan(last[1]))
    minute = rollups(samples, 60 * S)
    assert len(minute) == 2 and minute.n.tolist() == [420, 420]  # both sensors, one minute


def test_a_bucket_without_a_finite_value_has_no_min_or_max() -> None:
    f = Frame("s", 0, (Series("x", np.array([np.nan, np.nan]), 0, 1),))
    r = rollups(samples_of([f]), S)
    assert len(r) == 1 and r.n_values.tolist() == [0]
    assert math.isnan(r.min[0]) and math.isnan(r.max[0])
