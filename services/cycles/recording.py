"""A cycle's recording: its samples gathered from the frames that cover it, with how complete
it is (gaps, late and replayed frames). Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frame_checks import _DTYPE
from schemas.frame_regular import RegularFrame
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
    series, used = _cut(inside, start_ns, end_ns)
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


Piece = tuple[int, npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.uint8] | None, int]
Cut = tuple[npt.NDArray[np.int64], list[npt.NDArray[Any]], list[int]]


def _cut(frames: list[Frame], start_ns: int, end_ns: int) -> tuple[list[Series], list[int]]:
    """The cut of ``frames`` (in bus order), one series per sensor, and the seqs of the frames
    that had samples in it.

    Regular frames (every sensor on one clock: a machine's usual frames, read from their
    bodies) are grouped by layout, and each group is cut all at once; a machine whose slow
    sensors ride along every tenth frame makes two groups. Anything else is cut frame by
    frame, sensor by sensor. A sensor whose samples stay evenly spaced on its clock is kept
    on it (no explicit timestamps)."""
    groups: dict[tuple[Any, ...], list[tuple[int, RegularFrame]]] = {}
    irregular: list[int] = []
    for i, f in enumerate(frames):
        p = regular_of(f) if f.raw is not None else None
        if p is None:
            irregular.append(i)
        else:
            key = (p.ids, p.dtype, p.dtypes, p.period_ns, p.n, p.shuffled)
            groups.setdefault(key, []).append((i, p))
    pieces: dict[str, list[Piece]] = {}
    first: dict[str, tuple[int, int]] = {}  # where each sensor first had samples in the cut
    used: list[int] = []
    for members in groups.values():
        index = [i for i, _ in members]
        peeks = [p for _, p in members]
        cut = _stacked(peeks, start_ns, end_ns) or _frame_by_frame(peeks, start_ns, end_ns)
        if cut is None:
            continue
        t, runs, chosen = cut
        used += [frames[index[k]].seq for k in chosen]
        at = index[chosen[0]]
        rows = [row for run in runs for row in run]
        for j, sid in enumerate(peeks[0].ids):
            pieces.setdefault(sid, []).append((at, t, rows[j], None, peeks[0].period_ns))
            first[sid] = min(first.get(sid, (at, j)), (at, j))
    for i in irregular:
        inside = False
        for j, s in enumerate(frames[i].complete().series):
            t = s.timestamps()
            keep = (t >= start_ns) & (t <= end_ns)
            if not keep.any():
                continue
            inside = True
            q = None if s.quality is None else s.quality[keep]
            period = s.period_ns if s.timestamps_ns is None else 0  # 0: explicit times
            pieces.setdefault(s.sensor_id, []).append((i, t[keep], s.values[keep], q, period))
            first[s.sensor_id] = min(first.get(s.sensor_id, (i, j)), (i, j))
        if inside:
            used.append(frames[i].seq)
    return [_joined(sid, pieces[sid]) for sid in sorted(first, key=first.__getitem__)], used


def _joined(sensor_id: str, pieces: list[Piece]) -> Series:
    """One sensor's pieces of the cut as one series, in time order."""
    pieces.sort(key=lambda piece: piece[0])  # bus order: ties in time keep it
    if len(pieces) == 1:
        _, t, v, q, _ = pieces[0]
    else:
        t = np.concatenate([piece[1] for piece in pieces])
        v = np.concatenate([piece[2] for piece in pieces])
        q = (
            None
            if all(piece[3] is None for piece in pieces)
            else np.concatenate([
                np.full(len(pt), QUALITY_GOOD, dtype=np.uint8) if pq is None else pq
                for _, pt, _, pq, _ in pieces
            ])
        )  # fmt: skip
    if len(t) > 1 and np.any(t[1:] < t[:-1]):  # a late frame: placed by its timestamps
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        q = None if q is None else q[order]
    period = pieces[0][4]
    on_clock = (
        q is None
        and period > 0
        and all(piece[4] == period for piece in pieces)
        and (len(t) < 2 or bool(np.all(np.diff(t) == period)))
    )
    if on_clock:
        return Series(sensor_id, v, int(t[0]), period)
    return Series(sensor_id, v, int(t[0]), 0, t, q)


def _stacked(peeks: list[RegularFrame], start_ns: int, end_ns: int) -> Cut | None:
    """The cut of regular frames of one layout with the same number of samples (a machine's
    frames, one after the other), all at once: their bodies as one byte matrix, frames by
    bytes, each dtype run taken out of it in one view; its times, a matrix per dtype run
    (sensors by samples) and which of the frames it used; None when the frames differ in
    size or none has a sample in the cut."""
    first = peeks[0]
    n, period, shuffled = first.n, first.period_ns, first.shuffled
    if any(p.n != n for p in peeks):
        return None
    t0 = np.fromiter((p.t0_ns for p in peeks), dtype=np.int64, count=len(peeks))
    t = t0[:, None] + np.arange(n, dtype=np.int64) * period  # frames x samples
    keep = (t >= start_ns) & (t <= end_ns)
    chosen = np.flatnonzero(keep.any(axis=1))
    if not len(chosen):
        return None
    count = len(chosen)
    body = np.frombuffer(b"".join([peeks[i].body for i in chosen]), dtype=np.uint8)
    body = body.reshape(count, -1)
    keep = keep[chosen]
    k = len(first.ids)
    codes = first.dtypes or (first.dtype,) * k
    runs, row, pos = [], 0, 0
    while row < k:
        code = codes[row]
        r = 1
        while row + r < k and codes[row + r] == code:
            r += 1
        dtype = _DTYPE[code]
        size = dtype.itemsize
        chunk = body[:, pos : pos + r * n * size]
        if shuffled:  # per sensor: byte 0 of every sample, then byte 1, ...
            cube = chunk.reshape(count, r, size, n).transpose(1, 0, 3, 2)
        else:
            cube = chunk.reshape(count, r, n, size).transpose(1, 0, 2, 3)
        values = np.ascontiguousarray(cube).view(dtype).reshape(r, count, n)
        runs.append(values[:, keep])
        row += r
        pos += r * n * size
    return t[chosen][keep], runs, chosen.tolist()


def _frame_by_frame(peeks: list[RegularFrame], start_ns: int, end_ns: int) -> Cut | None:
    """The cut of regular frames of one layout whatever their sizes, frame by frame."""
    period = peeks[0].period_ns
    times: list[npt.NDArray[np.int64]] = []
    blocks: list[list[npt.NDArray[Any]]] = []
    used: list[int] = []
    for k, p in enumerate(peeks):
        lo = max(0, -((p.t0_ns - start_ns) // period))  # the first sample at or after start
        hi = min(p.n, (end_ns - p.t0_ns) // period + 1) if end_ns >= p.t0_ns else 0
        if hi <= lo:
            continue
        times.append(p.t0_ns + np.arange(lo, hi, dtype=np.int64) * period)
        blocks.append([run[:, lo:hi] for run in p.runs()])
        used.append(k)
    if not used:
        return None
    t = np.concatenate(times)
    return t, [np.concatenate([b[j] for b in blocks], axis=1) for j in range(len(blocks[0]))], used
