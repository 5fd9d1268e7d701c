"""A cycle's recording: its samples gathered from the frames that cover it, with how complete
it is (gaps, late and replayed frames). Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frames import QUALITY_GOOD, Frame, Series, regular_of


@dataclass(frozen=True, slots=True)
class Recording:
    """The samples of one cycle, gathered from the frames that cover it."""

    frame: Frame  # one series per sensor, explicit timestamps; seq = cycle number
    samples: dict[str, int]
    frames: int
    gaps: int
    late_frames: int
    replayed_frames: int
    completeness: float


def record(
    stream_id: str, cycle_no: int, start_ns: int, end_ns: int, frames: list[Frame]
) -> Recording:
    """Cut ``frames`` (in bus order) to [start_ns, end_ns] and join them per sensor.

    Completeness counts frames missing from the ``seq`` run that covers the cycle; a frame seen
    twice is kept once, a frame out of order is counted late (and placed by its timestamps).
    """
    seen: set[int] = set()
    replayed = late = 0
    highest = -1
    inside: list[Frame] = []
    for f in frames:
        if f.seq in seen:
            replayed += 1
            continue
        seen.add(f.seq)
        if f.seq < highest:
            late += 1
        highest = max(highest, f.seq)
        if f.last_ns() < start_ns or f.first_ns() > end_ns:
            continue
        inside.append(f)
    cut = _cut_regular(inside, start_ns, end_ns)
    series, used = cut if cut is not None else _cut_general(inside, start_ns, end_ns)
    samples = {s.sensor_id: s.n for s in series}
    if not series:
        series = [Series("none", np.zeros(0), start_ns, 0, np.zeros(0, dtype=np.int64))]
    expected = (max(used) - min(used) + 1) if used else 0
    return Recording(
        frame=Frame(stream_id, cycle_no, tuple(series)),
        samples=samples,
        frames=len(used),
        gaps=expected - len(used),
        late_frames=late,
        replayed_frames=replayed,
        completeness=len(used) / expected if expected else 0.0,
    )


def _cut_regular(
    frames: list[Frame], start_ns: int, end_ns: int
) -> tuple[list[Series], list[int]] | None:
    """The cut of frames that all share one regular layout (every sensor on one clock, the same
    sensors, dtypes and period: a machine's usual frames), one matrix per dtype run for all of
    them; None for anything else. A cycle of evenly spaced samples is kept on its clock (no
    explicit timestamps)."""
    if not frames or any(f.raw is None for f in frames):
        return None
    peeks = [regular_of(f) for f in frames]
    first = peeks[0]
    if first is None:
        return None
    layout = (first.ids, first.dtype, first.dtypes, first.period_ns)
    if any(p is None or (p.ids, p.dtype, p.dtypes, p.period_ns) != layout for p in peeks):
        return None
    period = first.period_ns
    times: list[npt.NDArray[np.int64]] = []
    blocks: list[list[npt.NDArray[Any]]] = []
    used: list[int] = []
    for f, p in zip(frames, peeks, strict=True):
        assert p is not None
        lo = max(0, -((p.t0_ns - start_ns) // period))  # the first sample at or after start
        hi = min(p.n, (end_ns - p.t0_ns) // period + 1) if end_ns >= p.t0_ns else 0
        if hi <= lo:
            continue
        times.append(p.t0_ns + np.arange(lo, hi, dtype=np.int64) * period)
        blocks.append([run[:, lo:hi] for run in p.runs()])
        used.append(f.seq)
    if not used:
        return [], []
    t = np.concatenate(times)
    runs = [np.concatenate([b[j] for b in blocks], axis=1) for j in range(len(blocks[0]))]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):  # a late frame: placed by its timestamps
        order = np.argsort(t, kind="stable")
        t = t[order]
        runs = [r[:, order] for r in runs]
    even = len(t) < 2 or bool(np.all(np.diff(t) == period))
    rows = [row for r in runs for row in r]
    if even:
        series = [Series(sid, v, int(t[0]), period) for sid, v in zip(first.ids, rows, strict=True)]
    else:
        series = [Series(sid, v, int(t[0]), 0, t) for sid, v in zip(first.ids, rows, strict=True)]
    return series, used


def _cut_general(frames: list[Frame], start_ns: int, end_ns: int) -> tuple[list[Series], list[int]]:
    """The cut of any frames, sensor by sensor."""
    parts_t: dict[str, list[npt.NDArray[np.int64]]] = {}
    parts_v: dict[str, list[npt.NDArray[Any]]] = {}
    parts_q: dict[str, list[npt.NDArray[np.uint8] | None]] = {}
    used: list[int] = []
    for f in frames:
        inside = False
        for s in f.complete().series:
            t = s.timestamps()
            keep = (t >= start_ns) & (t <= end_ns)
            if not keep.any():
                continue
            inside = True
            parts_t.setdefault(s.sensor_id, []).append(t[keep])
            parts_v.setdefault(s.sensor_id, []).append(s.values[keep])
            parts_q.setdefault(s.sensor_id, []).append(
                None if s.quality is None else s.quality[keep]
            )
        if inside:
            used.append(f.seq)
    series = []
    for sensor_id in parts_t:
        t = np.concatenate(parts_t[sensor_id])
        v = np.concatenate(parts_v[sensor_id])
        pairs = zip(parts_t[sensor_id], parts_q[sensor_id], strict=True)
        q = (
            None
            if all(pq is None for pq in parts_q[sensor_id])
            else np.concatenate(
                [
                    np.full(len(pt), QUALITY_GOOD, dtype=np.uint8) if pq is None else pq
                    for pt, pq in pairs
                ]
            )
        )
        if len(t) > 1 and np.any(t[1:] < t[:-1]):
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            q = None if q is None else q[order]
        series.append(Series(sensor_id, v, int(t[0]), 0, t, q))
    return series, used
