"""Rollups of a batch of frames against a plain Python reckoning of the same samples."""

from __future__ import annotations

import math

import numpy as np

from schemas.frames import Frame, Series
from services.common.rollups import (
    Rollups,
    Samples,
    block,
    block_rollups,
    frame_rollups,
    merge,
    rollups,
    samples_of,
)

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


def _rows(r: Rollups) -> dict[tuple[str, str, int], tuple[float, ...]]:
    return {
        (r.stream_id[i], r.sensor_id[i], int(r.bucket_ns[i])): (
            int(r.n[i]),
            int(r.n_bad[i]),
            int(r.n_values[i]),
            float(r.min[i]),
            float(r.max[i]),
            round(float(r.sum[i]), 9),
            float(r.last[i]),
            int(r.last_ns[i]),
        )
        for i in range(len(r))
    }


def _mixed_frames() -> list[Frame]:
    """Regular frames (one clock, with and without quality, NaN, an int dtype, two streams)
    and irregular ones (explicit timestamps, two rates), 700 ms each."""
    rng = np.random.default_rng(5)
    frames = []
    for k in range(8):
        t0 = 5 * S + k * 700_000_000
        v = rng.normal(size=(3, 70))
        v[0, 4] = np.nan
        q = np.full((3, 70), 192, dtype=np.uint8)
        q[1, 10:13] = 0
        regular = tuple(
            Series(f"r{j}", v[j], t0, 10_000_000, None, q[j] if k % 2 else None) for j in range(3)
        )
        frames.append(Frame("press-1", k, regular))
        frames.append(
            Frame("press-2", k, (Series("c", rng.integers(0, 9, 35).astype("i4"), t0, 20_000_000),))
        )
        t = t0 + np.sort(rng.integers(0, 700_000_000, 50))
        frames.append(
            Frame(
                "press-3",
                k,
                (
                    Series("x", rng.normal(size=50), int(t[0]), 0, t),
                    Series("y", rng.normal(size=10), t0, 70_000_000),
                ),
            )
        )
    return frames


def test_frame_rollups_merged_equal_the_rollups_of_all_samples() -> None:
    frames = _mixed_frames()
    whole = rollups(samples_of(frames), S)
    per_frame = frame_rollups(frames[::-1], S)
    assert sorted(set(per_frame.frame.tolist())) == list(range(len(frames)))
    assert _rows(merge(per_frame, S)) == _rows(whole)
    # a minute from the 1 s rows, and the per-frame minute rows merged, agree too
    minute = _rows(rollups(samples_of(frames), 60 * S))
    assert _rows(merge(frame_rollups(frames, S), 60 * S)) == minute
    assert _rows(merge(merge(per_frame, 60 * S, by_frame=True), 60 * S)) == minute


def test_per_frame_rows_belong_to_their_frame() -> None:
    frames = _mixed_frames()
    r = frame_rollups(frames, S)
    for k, f in enumerate(frames):
        mine = np.flatnonzero(r.frame == k)
        assert {r.stream_id[i] for i in mine} == {f.stream_id}
        assert {r.sensor_id[i] for i in mine} == {s.sensor_id for s in f.series}
        assert int(r.n[mine].sum()) == f.n_samples
    one = frame_rollups([frames[0]], S)
    assert int(one.n.sum()) == frames[0].n_samples


def test_block_rollups_merged_with_an_origin() -> None:
    frames = [f for f in _mixed_frames() if f.stream_id == "press-1" and f.seq % 2 == 0]
    values = np.stack([np.stack([s.values for s in f.series]) for f in frames])
    t0 = np.array([f.series[0].t0_ns for f in frames], dtype=np.int64)
    blk = block("press-1", ("r0", "r1", "r2"), values, None, t0, 10_000_000, np.arange(len(frames)))
    origin = 5 * S + 123_000_000
    got = merge(block_rollups(blk, 300_000_000, origin), 300_000_000, origin)
    s = samples_of(frames)
    shifted = rollups(Samples(s.names, s.key, s.t - origin, s.v, s.q), 300_000_000)
    expected = {
        (a, b, t + origin): (*x[:-1], x[-1] + origin) for (a, b, t), x in _rows(shifted).items()
    }
    assert _rows(got) == expected
