"""The per-stream cycle state machine: pure, no clock (``now_ns`` is passed in), no I/O.

IDLE -> RUNNING on a start command or a signal crossing ``start_above`` (held ``debounce_s``);
RUNNING -> STOPPING on a stop/abort command (waits up to ``stop_grace_s`` for data still in flight
up to the stop time); RUNNING/STOPPING -> COMPLETED or ABORTED (data gap, shorter than
``min_duration_s``, longer than ``max_duration_s``, explicit abort) -> IDLE.

Every function returns the new state and the transitions it produced. A samples message whose
JetStream sequence was already applied changes nothing, so redelivery after a crash is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.frames import Frame
from schemas.messages import CycleConfig, CycleStateRecord
from schemas.timeutil import NS

RECENT = 64  # frames remembered for command-started cycles
END_OF_STREAM = 2**63 - 1  # record up to whatever the bus holds now (cut by time anyway)


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the state machine needs of one samples message."""

    seq: int
    js_seq: int
    first_ns: int
    last_ns: int
    signal_t: npt.NDArray[np.int64] | None = None  # the trigger sensor's samples, if any
    signal_v: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True, slots=True)
class Started:
    cycle_id: str
    cycle_no: int
    at_ns: int
    reason: str
    start_js_seq: int


@dataclass(frozen=True, slots=True)
class Ended:
    cycle_id: str
    cycle_no: int
    start_ns: int
    end_ns: int
    state: str  # completed | aborted
    reason: str
    start_js_seq: int
    end_js_seq: int
    frames: int
    gaps: int
    late_frames: int
    replayed_frames: int


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


Output = Started | Ended | Ignored


def cycle_id_for(stream_id: str, start_ns: int) -> str:
    """Deterministic id: replaying the same start gives the same cycle."""
    return f"{stream_id}-{start_ns // 1_000_000}"


def _start(
    state: CycleStateRecord, at_ns: int, js_seq: int, reason: str
) -> tuple[CycleStateRecord, Started]:
    cycle_id = cycle_id_for(state.stream_id, at_ns)
    new = state.model_copy(
        update={
            "state": "running",
            "cycle_no": state.cycle_no + 1,
            "cycle_id": cycle_id,
            "started_ns": at_ns,
            "start_js_seq": js_seq,
            "start_reason": reason,
            "stop_at_ns": None,
            "stop_reason": "",
            "stop_state": "completed",
            "stop_requested_ns": None,
            "candidate_since_ns": None,
            "armed": False,
            "frames": 0,
            "gaps": 0,
            "late_frames": 0,
            "replayed_frames": 0,
        }
    )
    return new, Started(cycle_id, new.cycle_no, at_ns, reason, js_seq)


def _end(
    state: CycleStateRecord, cfg: CycleConfig, end_ns: int, end_js_seq: int, kind: str, reason: str
) -> tuple[CycleStateRecord, Ended]:
    assert state.cycle_id is not None
    assert state.started_ns is not None
    end_ns = max(end_ns, state.started_ns)  # a cycle never ends before it began
    duration = (end_ns - state.started_ns) / NS
    if kind == "completed" and duration < cfg.min_duration_s:
        kind, reason = (
            "aborted",
            f"shorter than the minimum ({duration:.2f} s < {cfg.min_duration_s:g} s)",
        )
    ended = Ended(
        cycle_id=state.cycle_id,
        cycle_no=state.cycle_no,
        start_ns=state.started_ns,
        end_ns=end_ns,
        state=kind,
        reason=reason,
        start_js_seq=state.start_js_seq or end_js_seq,
        end_js_seq=end_js_seq,
        frames=state.frames,
        gaps=state.gaps,
        late_frames=state.late_frames,
        replayed_frames=state.replayed_frames,
    )
    new = state.model_copy(
        update={
            "state": "idle",
            "cycle_id": None,
            "started_ns": None,
            "start_js_seq": None,
            "stop_at_ns": None,
            "stop_requested_ns": None,
            "candidate_since_ns": None,
        }
    )
    return new, ended


def first_held(
    t: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    carried_since: int | None,
    debounce_ns: int,
) -> tuple[int | None, int | None]:
    """Where a condition (``mask`` per sample) has held ``debounce_ns`` for the first time.

    Returns ``(index, since)``: the sample index that confirms it and when the run began, or
    ``(None, since)`` with the start of a run still open at the end (to carry into the next frame).
    Works run by run, never sample by sample.
    """
    if len(mask) == 0 or not mask.any():
        return None, None
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    starts, stops = edges[::2], edges[1::2]
    since = None
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        since = carried_since if (a == 0 and carried_since is not None) else int(t[a])
        k = a + int(np.searchsorted(t[a:b], since + debounce_ns))
        if k < b:
            return k, since
    return None, since if stops[-1] == len(mask) else None


def on_frame(
    state: CycleStateRecord, cfg: CycleConfig, frame: FrameInfo, now_ns: int
) -> tuple[CycleStateRecord, list[Output]]:
    """Apply one samples message."""
    if frame.js_seq <= state.last_js_seq:
        return state, []  # already applied: a redelivery
    if (
        state.last_seq >= 0
        and frame.seq <= state.last_seq
        and frame.last_ns
        <= (state.last_data_ns if state.last_data_ns is not None else frame.last_ns)
    ):
        return _late(state, frame), []
    out: list[Output] = []
    gap_ns = round(cfg.gap_timeout_s * NS)
    last = state.last_data_ns
    running = state.state in ("running", "stopping")
    if running and last is not None and frame.first_ns - last > gap_ns:
        gap = (frame.first_ns - last) / NS
        reason = f"data gap of {gap:.1f} s (timeout {cfg.gap_timeout_s:g} s)"
        state, ended = _end(state, cfg, last, state.last_js_seq, "aborted", reason)
        out.append(ended)
    update: dict[str, Any] = {
        "recent": [*state.recent[-(RECENT - 1) :], (frame.js_seq, frame.first_ns)],
        "last_js_seq": frame.js_seq,
        "last_seq": max(state.last_seq, frame.seq),
        "last_data_ns": max(state.last_data_ns or frame.last_ns, frame.last_ns),
        "last_arrival_ns": now_ns,
    }
    if state.state in ("running", "stopping"):
        gaps, late, replayed = state.gaps, state.late_frames, state.replayed_frames
        if frame.seq > state.last_seq + 1 and state.frames > 0:
            gaps += frame.seq - state.last_seq - 1
        elif frame.seq == state.last_seq:
            replayed += 1
        elif frame.seq < state.last_seq:
            late += 1
        update.update(
            frames=state.frames + 1, gaps=gaps, late_frames=late, replayed_frames=replayed
        )
    state = state.model_copy(update=update)  # one copy a frame
    if state.state == "running" and state.started_ns is not None:
        limit = state.started_ns + round(cfg.max_duration_s * NS)
        if frame.last_ns > limit:
            state, ended = _end(
                state,
                cfg,
                limit,
                frame.js_seq,
                "aborted",
                f"longer than the maximum ({cfg.max_duration_s:g} s)",
            )
            return state, [*out, ended]
    if (
        state.state == "stopping"
        and state.stop_at_ns is not None
        and frame.last_ns >= state.stop_at_ns
    ):
        state, ended = _end(
            state, cfg, state.stop_at_ns, frame.js_seq, state.stop_state, state.stop_reason
        )
        out.append(ended)
    if cfg.trigger == "signal" and frame.signal_t is not None and frame.signal_v is not None:
        state, more = _signal(state, cfg, frame)
        out.extend(more)
    return state, out


def _late(state: CycleStateRecord, frame: FrameInfo) -> CycleStateRecord:
    """A frame older than what was applied (published again after an outage, or overtaken in
    a failover): counted, its samples kept by the recording, but it drives no transition."""
    update: dict[str, Any] = {"last_js_seq": frame.js_seq}
    if state.state in ("running", "stopping"):
        update["frames"] = state.frames + 1
        if frame.seq == state.last_seq:
            update["replayed_frames"] = state.replayed_frames + 1
        else:
            update["late_frames"] = state.late_frames + 1
    return state.model_copy(update=update)


def _signal(
    state: CycleStateRecord, cfg: CycleConfig, frame: FrameInfo
) -> tuple[CycleStateRecord, list[Output]]:
    assert frame.signal_t is not None
    assert frame.signal_v is not None
    assert cfg.start_above is not None
    assert cfg.stop_below is not None
    t, v = frame.signal_t, frame.signal_v
    debounce = round(cfg.debounce_s * NS)
    out: list[Output] = []
    i = 0
    while i < len(t) and state.state in ("idle", "running"):
        if state.state == "idle" and not state.armed:
            # a cycle starts on a rising edge: a signal already high when watching began (or
            # still high after a cycle ended on a limit) must go low first
            low = np.flatnonzero(v[i:] <= cfg.stop_below)
            if len(low) == 0:
                break
            i += int(low[0])
            state = state.model_copy(update={"armed": True, "candidate_since_ns": None})
        mask = v[i:] >= cfg.start_above if state.state == "idle" else v[i:] <= cfg.stop_below
        k, since = first_held(t[i:], mask, state.candidate_since_ns, debounce)
        if k is None:
            state = state.model_copy(update={"candidate_since_ns": since})
            break
        assert since is not None
        if state.state == "idle":
            state, started = _start(
                state, since, frame.js_seq, f"{cfg.signal_sensor} >= {cfg.start_above:g}"
            )
            state = state.model_copy(update={"frames": 1, "last_seq": frame.seq})
            out.append(started)
        else:
            state, ended = _end(
                state,
                cfg,
                since,
                frame.js_seq,
                "completed",
                f"{cfg.signal_sensor} <= {cfg.stop_below:g}",
            )
            state = state.model_copy(update={"armed": True})  # it fell: the next rise may start
            out.append(ended)
        i += k + 1
    return state, out


def on_command(
    state: CycleStateRecord, cfg: CycleConfig, command: str, at_ns: int, reason: str, now_ns: int
) -> tuple[CycleStateRecord, list[Output]]:
    """Apply ``cycle_start``, ``cycle_stop`` or ``cycle_abort`` issued at ``at_ns``."""
    if command == "cycle_start":
        out: list[Output] = []
        if state.state == "stopping" and state.stop_at_ns is not None and at_ns >= state.stop_at_ns:
            # the next cycle begins: the stopping one is complete, whatever data is still in flight
            state, ended = _end(
                state, cfg, state.stop_at_ns, END_OF_STREAM, state.stop_state, state.stop_reason
            )
            out.append(ended)
        if state.state != "idle":
            return state, [Ignored(f"cycle_start while {state.state} ({state.cycle_id})")]
        # frames covering at_ns may already be applied: record from the last one starting before
        before = [js for js, first in state.recent if first <= at_ns]
        if before:
            first_js = before[-1]
        elif state.recent:
            first_js = state.recent[0][0]
        else:
            first_js = state.last_js_seq + 1
        new, started = _start(state, at_ns, max(first_js, 1), reason or "start command")
        return new.model_copy(update={"last_arrival_ns": now_ns}), [*out, started]
    if command in ("cycle_stop", "cycle_abort"):
        if state.state != "running":
            return state, [Ignored(f"{command} while {state.state}")]
        kind = "completed" if command == "cycle_stop" else "aborted"
        why = reason or ("stop command" if kind == "completed" else "abort command")
        new = state.model_copy(
            update={
                "state": "stopping",
                "stop_at_ns": at_ns,
                "stop_state": kind,
                "stop_reason": why,
                "stop_requested_ns": now_ns,
            }
        )
        if state.last_data_ns is not None and state.last_data_ns >= at_ns:
            new, ended = _end(new, cfg, at_ns, state.last_js_seq, kind, why)
            return new, [ended]
        return new, []
    return state, [Ignored(f"unknown command {command!r}")]


def on_tick(
    state: CycleStateRecord,
    cfg: CycleConfig,
    now_ns: int,
    watching_since_ns: int = 0,
    backlog: int = 0,
) -> tuple[CycleStateRecord, list[Output]]:
    """Time passing: data gaps, maximum duration, and the grace period of a stop.

    Silence is judged only when the consumer has nothing waiting (``backlog`` 0) and counted
    from ``watching_since_ns`` at the earliest (when this process began), so a service that was
    down or is catching up never calls a gap that the data does not show.
    """
    started = state.started_ns
    if state.state == "idle" or started is None:
        return state, []
    end_data = state.last_data_ns if state.last_data_ns is not None else started
    if state.state == "stopping" and state.stop_requested_ns is not None:
        if now_ns - state.stop_requested_ns >= round(cfg.stop_grace_s * NS):
            assert state.stop_at_ns is not None
            end = max(started, min(state.stop_at_ns, end_data))
            state, ended = _end(
                state, cfg, end, state.last_js_seq, state.stop_state, state.stop_reason
            )
            return state, [ended]
        return state, []
    arrival = (
        state.last_arrival_ns if state.last_arrival_ns is not None else state.stop_requested_ns
    )
    if arrival is not None:
        arrival = max(arrival, watching_since_ns)
    if backlog == 0 and arrival is not None and now_ns - arrival > round(cfg.gap_timeout_s * NS):
        gap = (now_ns - arrival) / NS
        state, ended = _end(
            state,
            cfg,
            max(started, end_data),
            state.last_js_seq,
            "aborted",
            f"no data for {gap:.1f} s (timeout {cfg.gap_timeout_s:g} s)",
        )
        return state, [ended]
    if end_data - started > round(cfg.max_duration_s * NS):
        limit = started + round(cfg.max_duration_s * NS)
        state, ended = _end(
            state,
            cfg,
            limit,
            state.last_js_seq,
            "aborted",
            f"longer than the maximum ({cfg.max_duration_s:g} s)",
        )
        return state, [ended]
    return state, []


def signal_of(
    frame: Frame, sensor_id: str | None
) -> tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float64] | None]:
    """Timestamps and values of the trigger sensor in ``frame`` (None when absent); a frame
    decoded for other sensors is completed when it carries this one."""
    if sensor_id is None or not frame.has(sensor_id):
        return None, None
    if not any(s.sensor_id == sensor_id for s in frame.series):
        frame = frame.complete()
    for s in frame.series:
        if s.sensor_id == sensor_id:
            return s.timestamps(), s.values.astype(np.float64)
    return None, None
