"""Rollups of a batch of frames against a plain Python reckoning of the same samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.frames import Frame, Series
from services.common.rollups import Rollups, frame_rollups, samples_of

S = 1_000_000_000
Key = tuple[int, str, str, int]  # frame, stream, sensor, bucket


def reckon(frames: list[Frame], width: int) -> dict[Key, tuple[float, ...]]:
    """(n, n_bad, n_values, min, max, sum, last_ns, last) per frame, sensor and bucket."""
    items: dict[Key, list[tuple[int, float, int]]] = {}
    for k, f in enumerate(frames):
        for s in f.series:
            for t, v, q in zip(s.timestamps().tolist(), s.values.tolist(),
                               s.qualities().tolist(), strict=True):  # fmt: skip
                items.setdefault((k, f.stream_id, s.sensor_id, t // width * width), []).append(
                    (t, float(v), q)
                )
    out = {}
    for key, rows in items.items():
        finite = [v for _, v, q in rows if math.isfinite(v) and q == 192]
        last = max(rows, key=lambda r: r[0])
        out[key] = (
            len(rows), sum(q != 192 for *_, q in rows), len(finite),
            min(finite) if finite else math.nan, max(finite) if finite else math.nan,
            round(sum(finite), 9), last[0], last[1],
        )  # fmt: skip
    return out


def rows(r: Rollups) -> dict[Key, tuple[float, ...]]:
    return {
        (int(r.frame[i]), r.stream_id[i], r.sensor_id[i], int(r.bucket_ns[i])): (
            int(r.n[i]),
            int(r.n_bad[i]),
            int(r.n_values[i]),
            float(r.min[i]),
            float(r.max[i]),
            round(float(r.sum[i]), 9),
            int(r.last_ns[i]),
            float(r.last[i]),
        )
        for i in range(len(r))
    }


def same(a: dict[Key, tuple[float, ...]], b: dict[Key, tuple[float, ...]]) -> bool:
    """Equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a[k], b[k], strict=True))
        for k in a
    )


def mixed_frames() -> list[Frame]:
    """Regular frames (one clock, with and without quality, NaN, an int dtype, two streams)
    and irregular ones (explicit timestamps at uneven steps, two rates), 700 ms each: buckets of
    1 s span two or three frames."""
    rng = np.random.default_rng(5)
    frames = []
    for k in range(8):
        t0 = 5 * S + k * 700_000_000
        v = rng.normal(size=(3, 70))
        v[0, 4] = np.nan
        v[2, :] = np.nan if k == 3 else v[2, :]  # a bucket part without a finite value
        q = np.full((3, 70), 192, dtype=np.uint8)
        q[1, 10:13] = 0
        regular = tuple(
            Series(f"r{j}", v[j], t0, 10_000_000, None, q[j] if k % 2 else None) for j in range(3)
        )
        frames.append(Frame("press-1", k, regular))
        frames.append(
            Frame("press-2", k, (Series("c", rng.integers(0, 9, 35).astype("i4"), t0, 20_000_000),))
        )
        t = t0 + np.sort(rng.choice(np.arange(200) * 3_500_000, 50, replace=False))
        frames.append(
            Frame("press-3", k, (
                Series("x", rng.normal(size=50), int(t.min()), 0, t, np.full(50, 64, np.uint8)),
                Series("y", rng.normal(size=10), t0, 70_000_000),
            ))
        )  # fmt: skip
    return frames


def test_rollups_per_frame_match_a_plain_reckoning() -> None:
    frames = mixed_frames()
    for width in (S, 60 * S, 300_000_000):
        assert same(rows(frame_rollups(frames, width)), reckon(frames, width)), width


def test_every_sample_of_a_frame_is_in_its_rows() -> None:
    frames = mixed_frames()
    r = frame_rollups(frames[::-1], S)  # any order of frames
    for k, f in enumerate(frames[::-1]):
        mine = np.flatnonzero(r.frame == k)
        assert {r.stream_id[i] for i in mine} == {f.stream_id}
        assert {r.sensor_id[i] for i in mine} == {s.sensor_id for s in f.series}
        assert int(r.n[mine].sum()) == f.n_samples


def test_a_bucket_without_a_finite_value_has_no_min_or_max() -> None:
    f = Frame("s", 0, (Series("x", np.array([np.nan, np.nan]), 0, 1),))
    r = frame_rollups([f], S)
    assert len(r) == 1 and r.n_values.tolist() == [0] and r.n.tolist() == [2]
    assert math.isnan(r.min[0]) and math.isnan(r.max[0])


def test_samples_of_groups_every_sample_by_sensor_in_time_order() -> None:
    frames = mixed_frames()
    s = samples_of(frames[::-1])
    assert len(s.t) == sum(f.n_samples for f in frames)
    for k in range(len(s.names)):
        t = s.t[s.key == k]
        assert np.all(t[1:] >= t[:-1])


@pytest.mark.parametrize("shuffled", [False, True])
def test_frames_decoded_for_no_sensor_roll_up_as_the_decoded_ones(shuffled: bool) -> None:
    """Ingest rolls frames up straight from their bodies (a u1 input beside f4 values among
    them): the rows are those of the frames decoded sensor by sensor."""
    from schemas.frames import decode_binary, encode_binary

    frames = mixed_frames()
    t0 = 1_700_000_000 * S
    for k in range(4):
        frames.append(Frame("press-4", k, (
            Series("p", np.linspace(0, 1, 10).astype("f4"), t0 + k * S // 10, 10_000_000),
            Series("on", np.array([0, 1] * 5, dtype="u1"), t0 + k * S // 10, 10_000_000),
        )))  # fmt: skip
    partial = [decode_binary(encode_binary(f, shuffled=shuffled), ()) for f in frames]
    assert all(f.span is not None and not f.series for f in partial)
    for width in (S, 60 * S):
        assert same(rows(frame_rollups(partial, width)), reckon(frames, width)), width
