"""Raw history buckets from stored frames against a plain Python reckoning of the samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.frames import Frame, Series, encode_binary, pack
from services.gateway.raw_history import raw_buckets

MS = 1_000_000


def _frames() -> list[Frame]:
    """Regular frames (float32, float64, int16; NaN and infinity), irregular ones (explicit
    timestamps at uneven steps, two rates, quality), frames that overlap, 700 ms each."""
    rng = np.random.default_rng(11)
    frames = []
    for k in range(12):
        t0 = 1_000 * MS + k * 700 * MS
        v = rng.normal(size=(2, 70)).astype("f4")
        v[0, 3] = np.nan
        v[1, 8] = np.inf
        frames.append(
            Frame("rig", 4 * k, tuple(Series(f"f{j}", v[j], t0, 10 * MS) for j in range(2)))
        )
        d = rng.normal(size=(2, 35))
        frames.append(
            Frame(
                "rig", 4 * k + 1, (Series("d", d[0], t0, 20 * MS), Series("e", d[1], t0, 20 * MS))
            )
        )
        frames.append(
            Frame(
                "rig",
                4 * k + 2,
                (Series("j", rng.integers(-999, 999, 7).astype("i2"), t0, 100 * MS),),
            )
        )
        t = t0 + np.sort(rng.choice(np.arange(200) * 4 * MS, 50, replace=False))
        frames.append(
            Frame("rig", 4 * k + 3, (
                Series("x", rng.normal(size=50), int(t.min()), 0, t,
                       np.where(np.arange(50) % 7 == 3, 0, 192).astype(np.uint8)),
                Series("f0", rng.normal(size=7).astype("f4"), t0 + 5 * MS, 100 * MS),
                Series("i", rng.integers(-9, 9, 35).astype("u1"), t0, 20 * MS),
            ))
        )  # fmt: skip
    return frames


def _reckon(frames: list[Frame], start: int, end: int, width: int, sensors: set[str] | None):
    """(value, quality) of each sample per (sensor, bucket)."""
    out: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for f in frames:
        for s in f.series:
            if sensors is not None and s.sensor_id not in sensors:
                continue
            for t, v, q in zip(s.timestamps().tolist(), s.values.tolist(),
                               s.qualities().tolist(), strict=True):  # fmt: skip
                if start <= t < end:
                    out.setdefault((s.sensor_id, (t - start) // width), []).append((float(v), q))
    return out


@pytest.mark.parametrize("plain", [False, True], ids=["stored", "plain-layout"])
@pytest.mark.parametrize(
    ("start", "end", "width", "sensors"),
    [
        (0, 20_000 * MS, 1_000 * MS, None),
        (2_345 * MS, 7_001 * MS, 37 * MS, None),  # clipped at both ends, odd width
        (1_500 * MS, 9_000 * MS, 250 * MS, ["f0", "x"]),
    ],
)
def test_raw_buckets_match_a_plain_reckoning(
    plain: bool, start: int, end: int, width: int, sensors: list[str] | None
) -> None:
    import zstandard

    frames = _frames()
    if plain:
        payloads = [zstandard.ZstdCompressor().compress(encode_binary(f)) for f in frames]
    else:
        payloads = [pack(f) for f in frames]
    b = raw_buckets(payloads, start, end, width, sensors)
    expected = _reckon(frames, start, end, width, None if sensors is None else set(sensors))
    assert set(b.ids) == {sid for sid, _ in expected}
    got = {
        (sid, col) for row, sid in enumerate(b.ids) for col in np.flatnonzero(b.count[row]).tolist()
    }
    assert got == set(expected)
    for (sid, col), values in expected.items():
        row = b.ids.index(sid)
        # a sample of bad quality is no value: counted, not reduced
        finite = [v for v, q in values if math.isfinite(v) and q == 192]
        assert b.count[row, col] == len(values)
        assert b.bad[row, col] == sum(q != 192 for _, q in values)
        assert b.n_values[row, col] == len(finite)
        if finite:
            assert b.min[row, col] == min(finite) and b.max[row, col] == max(finite)
            assert math.isclose(b.sum[row, col], sum(finite), rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert math.isnan(b.min[row, col]) and math.isnan(b.max[row, col])


def test_no_frames_give_empty_buckets() -> None:
    b = raw_buckets([], 0, 10 * MS, MS, None)
    assert b.ids == [] and b.count.shape == (0, 10)
