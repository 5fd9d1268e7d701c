"""A cycle's recording: its samples gathered from the frames that cover it, with how complete
it is (gaps, late and replayed frames). Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frames import QUALITY_GOOD, Frame, Series, peek_regular


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
    parts_t: dict[str, list[npt.NDArray[np.int64]]] = {}
    parts_v: dict[str, list[npt.NDArray[Any]]] = {}
    parts_q: dict[str, list[npt.NDArray[np.uint8] | None]] = {}
    used: list[int] = []
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
        regular = peek_regular(f.raw, one_dtype=False) if f.raw is not None else None
        if regular is not None:  # every sensor on one clock: one mask for all of them
            t = regular.t0_ns + np.arange(regular.n, dtype=np.int64) * regular.period_ns
            keep = (t >= start_ns) & (t <= end_ns)
            if not keep.any():
                continue
            whole = bool(keep.all())
            t = t if whole else t[keep]
            rows = regular.rows()  # each sensor in its own dtype, as it was sent
            for r, sid in enumerate(regular.ids):
                parts_t.setdefault(sid, []).append(t)
                parts_v.setdefault(sid, []).append(rows[r] if whole else rows[r][keep])
                parts_q.setdefault(sid, []).append(None)
            used.append(f.seq)
            continue
        inside = False
        for s in f.complete().series:
            t = s.timestamps()
            keep = (t >= start_ns) & (t <= end_ns)
            if not keep.any():
                continue
            inside = True
            parts_t.setdefault(s.sensor_id, []).append(t[keep])
            parts_v.setdefault(s.sensor_id, []).append(s.values[keep])
            parts_q.setdefault(s.sensor_id, []).append(s.qualities()[keep])
        if inside:
            used.append(f.seq)
    series = []
    for sensor_id in parts_t:
        t = np.concatenate(parts_t[sensor_id])
        v = np.concatenate(parts_v[sensor_id])
        pairs = zip(parts_t[sensor_id], parts_q[sensor_id], strict=True)
        q = np.concatenate(
            [
                np.full(len(pt), QUALITY_GOOD, dtype=np.uint8) if pq is None else pq
                for pt, pq in pairs
            ]
        )
        if len(t) > 1 and np.any(t[1:] < t[:-1]):
            order = np.argsort(t, kind="stable")
            t, v, q = t[order], v[order], q[order]
        series.append(Series(sensor_id, v, int(t[0]), 0, t, q))
    if not series:
        series = [Series("none", np.zeros(0), start_ns, 0, np.zeros(0, dtype=np.int64))]
    expected = (max(used) - min(used) + 1) if used else 0
    gaps = expected - len(used)
    return Recording(
        frame=Frame(stream_id, cycle_no, tuple(series)),
        samples={s.sensor_id: s.n for s in series if s.sensor_id in parts_t},
        frames=len(used),
        gaps=gaps,
        late_frames=late,
        replayed_frames=replayed,
        completeness=len(used) / expected if expected else 0.0,
    )
