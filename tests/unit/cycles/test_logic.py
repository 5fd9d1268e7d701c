"""The cycle state machine."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.messages import CycleConfig, CycleStateRecord
from services.cycles.logic import (
    Ended,
    FrameInfo,
    Ignored,
    Started,
    first_held,
    on_command,
    on_frame,
    on_tick,
)

NS = 1_000_000_000
MS = 1_000_000
MANUAL = CycleConfig(gap_timeout_s=2, min_duration_s=1, max_duration_s=60, stop_grace_s=1)
SIGNAL = CycleConfig(trigger="signal", signal_sensor="active", start_above=0.5, stop_below=0.5,
                     debounce_s=0.05, gap_timeout_s=2)  # fmt: skip


def frame(
    i: int, values: list[float] | None = None, js: int | None = None, seq: int | None = None
) -> FrameInfo:
    """Frame i covers [i*100 ms, (i+1)*100 ms) with 10 samples of the signal."""
    t = i * 100 * MS + np.arange(10, dtype=np.int64) * 10 * MS
    v = np.asarray(values if values is not None else [0.0] * 10, dtype=np.float64)
    return FrameInfo(
        seq if seq is not None else i, js if js is not None else i + 1, int(t[0]), int(t[-1]), t, v
    )


def run(state, cfg, frames):
    outs = []
    for f in frames:
        state, out = on_frame(state, cfg, f, f.last_ns)
        outs.extend(out)
    return state, outs


def test_manual_start_and_stop_complete_a_cycle_after_in_flight_data() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = run(s, MANUAL, [frame(i) for i in range(3)])
    s, out = on_command(s, MANUAL, "cycle_start", 250 * MS, "", 300 * MS)
    assert isinstance(out[0], Started)
    assert out[0].at_ns == 250 * MS
    assert out[0].start_js_seq == 3  # the frame covering the start is recorded too
    s, _ = run(s, MANUAL, [frame(i) for i in range(3, 20)])
    s, out = on_command(s, MANUAL, "cycle_stop", 2150 * MS, "", 2000 * MS)
    assert out == []
    assert s.state == "stopping"
    s, out = run(s, MANUAL, [frame(20), frame(21)])
    (ended,) = out
    assert isinstance(ended, Ended)
    assert (ended.state, ended.start_ns, ended.end_ns, ended.end_js_seq) == (
        "completed",
        250 * MS,
        2150 * MS,
        22,
    )
    assert s.state == "idle"


def test_stop_without_more_data_ends_after_the_grace_period() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = run(s, MANUAL, [frame(i) for i in range(15)])
    s, _ = on_command(s, MANUAL, "cycle_stop", 5 * NS, "", 1500 * MS)
    s, out = on_tick(s, MANUAL, 2000 * MS)
    assert out == []
    s, out = on_tick(s, MANUAL, 2600 * MS)
    assert isinstance(out[0], Ended)
    assert out[0].end_ns == frame(14).last_ns  # the data it has, not the requested time


def test_commands_in_the_wrong_state_are_ignored_with_a_reason() -> None:
    s = CycleStateRecord(stream_id="p")
    _, out = on_command(s, MANUAL, "cycle_stop", 0, "", 0)
    assert isinstance(out[0], Ignored)
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    _, out = on_command(s, MANUAL, "cycle_start", 1, "", 1)
    assert "while running" in out[0].reason


def test_signal_trigger_with_hysteresis_and_debounce() -> None:
    s = CycleStateRecord(stream_id="p")
    glitch = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # 10 ms high: shorter than the 50 ms debounce
    rising = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    high = [1.0] * 10
    falling = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    s, out = run(
        s,
        SIGNAL,
        [frame(0, glitch), frame(1, rising), frame(2, high), frame(3, high), frame(4, falling)],
    )
    started, ended = out
    assert isinstance(started, Started)
    assert started.at_ns == 130 * MS  # when the signal rose, confirmed 50 ms later
    assert isinstance(ended, Ended)
    assert ended.end_ns == 420 * MS
    assert ended.state == "completed"


def test_debounce_carries_across_frames() -> None:
    s = CycleStateRecord(stream_id="p")
    late_rise = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]  # high at 80 ms, 20 ms held at the end
    s, out = run(s, SIGNAL, [frame(0, late_rise), frame(1, [1.0] * 10)])
    assert isinstance(out[0], Started)
    assert out[0].at_ns == 80 * MS


def test_a_short_cycle_ends_aborted() -> None:
    s = CycleStateRecord(stream_id="p")
    cfg = SIGNAL.model_copy(update={"min_duration_s": 1.0})
    up_down = [0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    _, out = run(s, cfg, [frame(0, up_down), frame(1)])
    ended = next(o for o in out if isinstance(o, Ended))
    assert ended.state == "aborted"
    assert "shorter than the minimum" in ended.reason


def test_a_data_gap_aborts_the_running_cycle_at_the_last_data() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = run(s, MANUAL, [frame(i) for i in range(5)])
    s, out = run(s, MANUAL, [frame(40)])  # 3.5 s later
    (ended,) = [o for o in out if isinstance(o, Ended)]
    assert ended.state == "aborted"
    assert "data gap of 3.5 s" in ended.reason
    assert ended.end_ns == frame(4).last_ns


def test_silence_aborts_on_tick_and_maximum_duration_is_enforced() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = run(s, MANUAL, [frame(i) for i in range(3)])
    _, out = on_tick(s, MANUAL, 3 * NS)
    assert out[0].state == "aborted"
    assert "no data" in out[0].reason
    cfg = MANUAL.model_copy(update={"max_duration_s": 1.0})
    s2 = CycleStateRecord(stream_id="p")
    s2, _ = on_command(s2, cfg, "cycle_start", 0, "", 0)
    _, out = run(s2, cfg, [frame(i) for i in range(12)])
    ended = next(o for o in out if isinstance(o, Ended))
    assert "longer than the maximum" in ended.reason
    assert ended.end_ns == NS


def test_redelivered_messages_change_nothing_and_gaps_are_counted() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = run(s, MANUAL, [frame(0), frame(1), frame(4, js=5)])
    before = s
    s, out = run(s, MANUAL, [frame(1, js=2)])  # redelivery of an applied message
    assert (s, out) == (before, [])
    s, _ = run(s, MANUAL, [frame(2, js=6), frame(4, js=7)])  # late, then a repeat of seq 4
    assert (s.frames, s.gaps, s.late_frames, s.replayed_frames) == (5, 2, 1, 1)


@pytest.mark.parametrize(
    ("mask", "carried", "expected"),
    [
        ([0, 0, 0], None, (None, None)),
        ([0, 1, 1, 1, 1], None, (3, 10)),
        ([1, 1, 0, 1, 1], None, (None, 30)),
        ([1, 1, 0, 0, 0], -15, (1, -15)),
        ([1, 1, 0, 0, 0], -25, (0, -25)),
    ],
)
def test_first_held(mask, carried, expected) -> None:
    t = np.arange(len(mask), dtype=np.int64) * 10
    assert first_held(t, np.asarray(mask, dtype=bool), carried, 20) == expected


def test_a_start_while_stopping_completes_the_previous_cycle_first() -> None:
    from services.cycles.logic import END_OF_STREAM

    s = CycleStateRecord(stream_id="p")
    s, _ = run(s, MANUAL, [frame(i) for i in range(3)])
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = on_command(s, MANUAL, "cycle_stop", 5 * NS, "", 0)  # its data has not arrived yet
    s, out = on_command(s, MANUAL, "cycle_start", 5 * NS, "", 0)
    ended, started = out
    assert isinstance(ended, Ended)
    assert (ended.end_ns, ended.end_js_seq) == (5 * NS, END_OF_STREAM)
    assert isinstance(started, Started)
    assert started.at_ns == 5 * NS
    assert s.state == "running"


def test_a_signal_already_high_at_start_waits_for_a_rising_edge() -> None:
    s = CycleStateRecord(stream_id="p")
    high, low = [1.0] * 10, [0.0] * 10
    s, out = run(s, SIGNAL, [frame(0, high), frame(1, high)])
    assert out == []  # watching began in the middle of a cycle: not a whole cycle
    s, out = run(s, SIGNAL, [frame(2, low), frame(3, high), frame(4, low), frame(5, high)])
    started = [o for o in out if isinstance(o, Started)]
    ended = [o for o in out if isinstance(o, Ended)]
    assert [o.at_ns for o in started] == [300 * MS, 500 * MS]
    assert [o.end_ns for o in ended] == [400 * MS]


def test_frames_arriving_out_of_seq_order_make_no_phantom_cycle() -> None:
    low, high = [0.0] * 10, [1.0] * 10
    s = CycleStateRecord(stream_id="p")
    # a cycle from frame 1 to frame 5; frames 2 and 3 overtaken by 4 and 5 (a failover)
    bus_order = [frame(0, low), frame(1, high), frame(4, high, js=3), frame(5, low, js=4),
                 frame(2, high, js=5), frame(3, high, js=6), frame(6, low, js=7)]  # fmt: skip
    s, out = run(s, SIGNAL, bus_order)
    started = [o for o in out if isinstance(o, Started)]
    ended = [o for o in out if isinstance(o, Ended)]
    assert len(started) == 1
    assert len(ended) == 1
    assert ended[0].end_ns >= ended[0].start_ns
    assert ended[0].state == "completed"
    assert s.state == "idle"


def test_silence_is_not_judged_while_frames_wait_or_before_the_process_watched() -> None:
    s = CycleStateRecord(stream_id="p")
    s, _ = on_command(s, MANUAL, "cycle_start", 0, "", 0)
    s, _ = run(s, MANUAL, [frame(i) for i in range(3)])
    now = 60 * NS  # the service was down for a minute
    assert on_tick(s, MANUAL, now, watching_since_ns=now - NS)[1] == []
    assert on_tick(s, MANUAL, now, watching_since_ns=0, backlog=500)[1] == []
    _, out = on_tick(s, MANUAL, now, watching_since_ns=now - 3 * NS)
    assert "no data" in out[0].reason


def test_a_recording_cut_from_message_bodies_keeps_each_sensor_as_it_was_sent() -> None:
    """Frames decoded for the trigger only (as the cycles service decodes them) are recorded
    from their bodies: every sensor, in its own dtype, cut to the cycle."""
    from schemas.frames import Frame, Series, decode_binary, encode_binary
    from services.cycles.recording import record

    ns = 1_000_000_000
    frames, whole = [], []
    for k in range(5):
        t0 = k * ns // 10
        f = Frame("rec-1", k, (
            Series("p", np.arange(10, dtype="f4") + 10 * k, t0, ns // 100),
            Series("on", np.full(10, 1 if 1 <= k <= 3 else 0, dtype="u1"), t0, ns // 100),
        ))  # fmt: skip
        whole.append(f)
        frames.append(decode_binary(encode_binary(f, shuffled=True), ("on",)))
    start, end = ns // 10, 4 * ns // 10 - 1
    cut = record("rec-1", 1, start, end, frames)
    plain = record("rec-1", 1, start, end, whole)
    by_id = {s.sensor_id: s for s in cut.frame.series}
    assert by_id["p"].values.dtype == np.dtype("f4")
    assert by_id["on"].values.dtype == np.dtype("u1")
    assert cut.frame.equals(plain.frame)
    assert (cut.frames, cut.samples) == (plain.frames, plain.samples) == (3, {"p": 30, "on": 30})


def test_a_recording_of_regular_frames_equals_the_general_cut_whatever_their_order() -> None:
    """Frames on one clock are cut as matrices, kept on their clock when the cycle is even, and
    give the same recording as the sensor-by-sensor cut: late, replayed and missing frames
    included."""
    from schemas.frames import Frame, Series, decode_binary, encode_binary
    from services.cycles.recording import record

    ns = 1_000_000_000
    rng = np.random.default_rng(7)
    wire = []
    for k in range(12):
        t0 = k * ns // 10
        f = Frame("rec-2", k, (
            Series("p", rng.normal(size=10).astype("f8"), t0, ns // 100),
            Series("q", rng.normal(size=10).astype("f4"), t0, ns // 100),
            Series("r", rng.normal(size=10).astype("f8"), t0, ns // 100),
            Series("on", np.ones(10, dtype="u1"), t0, ns // 100),
        ))  # fmt: skip
        wire.append(encode_binary(f, shuffled=True))
    start, end = ns // 10 + 3 * ns // 100, 11 * ns // 10 - 5 * ns // 100
    for order in ([*range(12)], [0, 1, 3, 2, 4, 5, 5, 6, 7, 9, 10, 11], [1, 2, 4, 3, 6, 7]):
        raw = [decode_binary(wire[k], ("on",)) for k in order]
        whole = [decode_binary(wire[k]) for k in order]
        cut, plain = record("rec-2", 1, start, end, raw), record("rec-2", 1, start, end, whole)
        assert cut.frame.equals(plain.frame)
        assert (cut.frames, cut.gaps, cut.late_frames, cut.replayed_frames, cut.samples) == (
            plain.frames, plain.gaps, plain.late_frames, plain.replayed_frames, plain.samples
        )  # fmt: skip
        assert {s.values.dtype.str[1:] for s in cut.frame.series} == {"f8", "f4", "u1"}
        if order == [*range(12)]:
            assert all(s.timestamps_ns is None for s in cut.frame.series)  # kept on its clock
            assert cut.samples["p"] == 93 and cut.gaps == 0
        if 8 not in order:
            assert cut.gaps >= 1 and any(s.timestamps_ns is not None for s in cut.frame.series)


def test_a_recording_of_a_machine_with_slow_sensors_equals_the_general_cut() -> None:
    """Slow sensors ride along every tenth frame, so a cycle's frames come in two layouts (and
    one group of them may be cut all at once only in part): the cut is the same as the
    sensor-by-sensor one, late and missing frames included, and each fast sensor stays on its
    clock when nothing is missing."""
    from edge.simulator import Simulation, build_machine
    from schemas.frames import decode_binary, encode_binary
    from services.cycles.recording import record

    ns = 1_000_000_000
    start = 1_750_000_000 * ns
    machine = build_machine(stream_id="rec-3", sensors=8, rate_hz=100, active_signal=True)
    sim = Simulation(machine, start)
    wire = [encode_binary(sim.frame(k, start + k * ns // 10, start + (k + 1) * ns // 10),
                          shuffled=True) for k in range(45)]  # fmt: skip
    for k in range(45):
        decode_binary(wire[k])  # ids seen once, as a running service has seen them
    lo, hi = start + ns // 10 + 3 * ns // 100, start + 4 * ns - 7 * ns // 100
    missing_one = [k for k in range(45) if k != 20]
    late = [*range(10), 11, 10, *range(12, 45)]
    for order in ([*range(45)], missing_one, late):
        raw = [decode_binary(wire[k], ("cycle_active",)) for k in order]
        whole = [decode_binary(wire[k]) for k in order]
        cut, plain = record("rec-3", 1, lo, hi, raw), record("rec-3", 1, lo, hi, whole)
        assert cut.frame.equals(plain.frame)
        assert (cut.frames, cut.gaps, cut.late_frames, cut.samples) == (
            plain.frames, plain.gaps, plain.late_frames, plain.samples
        )  # fmt: skip
        by_id = {s.sensor_id: s for s in cut.frame.series}
        # 0.13 s to 3.93 s: 381 samples at 100 Hz and 3 at 1 Hz, less what frame 20 held
        assert by_id["pressure_1"].n == 381 - 10 * (order == missing_one)
        assert by_id["temperature_1"].n == 3 - (order == missing_one)
        if order == [*range(45)]:
            assert by_id["pressure_1"].timestamps_ns is None  # on its clock
