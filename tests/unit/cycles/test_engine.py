"""The cycles engine (CycleEngine) on an in-memory KV and outputs (tests/fakes.py), with the real
state and configuration stores: cycles cut on a signal, recorded and announced, frames
acknowledged only once the state that holds them is written, and a replica killed -9 mid-stream
(its unwritten state lost, its unacknowledged frames delivered again to the next) changing
nothing: every cycle once, none stuck. In milliseconds; tests/integration runs it on NATS."""

from __future__ import annotations

import json

from edge.simulator import Simulation, build_machine
from schemas.frames import Frame, decode_binary, encode_binary
from schemas.timeutil import NS
from services.cycles.adapters import ConfigStore, StateStore
from services.cycles.handlers import CycleEngine
from tests.fakes import FakeCycleOutputs, FakeKV, FakeMsg
from tests.scenarios import SIGNAL_TRIGGER

START = 1_750_000_000 * NS
FRAME_NS = NS // 10


class Stream:
    """A press with a cycle_active input, 4 s cycles, as frames of 100 ms on the bus."""

    def __init__(self, frames: int) -> None:
        machine = build_machine(stream_id="press", sensors=3, rate_hz=50, cycle_s=4,
                                active_signal=True)  # fmt: skip
        sim = Simulation(machine, START)
        wire = [encode_binary(sim.frame(k, START + k * FRAME_NS, START + (k + 1) * FRAME_NS),
                              shuffled=True) for k in range(frames)]  # fmt: skip
        self.frames = [decode_binary(w, ("cycle_active",)) for w in wire]  # as the consumer does


class Reader:
    """The samples stream read back by stream sequence, as JetStream holds it."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def last_seq(self) -> int:
        return len(self.stream.frames)

    async def between(self, stream_id: str, first: int, last: int) -> list[Frame]:
        return [f.complete() for f in self.stream.frames[first - 1 : last]]


def engine(
    states: FakeKV, configs: FakeKV, out: FakeCycleOutputs, now: list[int], stream: Stream
) -> CycleEngine:
    return CycleEngine(StateStore(states), ConfigStore(configs), Reader(stream), out, out, out,  # type: ignore[arg-type]
                       clock=lambda: now[0], save_every_s=3600)  # fmt: skip


async def feed(
    e: CycleEngine, stream: Stream, msgs: list[FakeMsg], seqs: range, now: list[int]
) -> None:
    for lo in range(seqs.start, seqs.stop, 16):
        batch = [k for k in range(lo, min(lo + 16, seqs.stop))]
        now[0] = stream.frames[batch[-1]].last_ns() + FRAME_NS
        deliveries = [type("D", (), {"msg": msgs[k], "item": stream.frames[k]})() for k in batch]
        await e.on_frames(deliveries)  # type: ignore[arg-type]


def completed(out: FakeCycleOutputs) -> list[str]:
    return [ev.cycle_id for ev in out.events if ev.state == "completed"]


async def test_cycles_are_cut_recorded_and_their_frames_acknowledged_once_written() -> None:
    stream, configs, states, out, now = Stream(170), FakeKV(), FakeKV(), FakeCycleOutputs(), [0]
    await configs.put("press", json.dumps(SIGNAL_TRIGGER).encode())
    msgs = [FakeMsg(k + 1) for k in range(170)]
    e = engine(states, configs, out, now, stream)
    await feed(e, stream, msgs, range(170), now)
    done = completed(out)
    assert len(done) == 4 and len(set(done)) == 4, [(ev.state, ev.cycle_id) for ev in out.events]
    for cycle_id in done:
        row = out.rows[cycle_id]
        assert row.state == "completed" and row.completeness > 0.99, row
        assert out.recorded[cycle_id].n_samples > 0
        assert abs((row.duration_s or 0) - 2.8) < 0.1  # cycle_active is 1 for 0.1-0.8 of 4 s
    # a frame is acknowledged once its state is written (at each cycle start and end here)
    assert all(m.acks <= 1 for m in msgs) and sum(m.acks for m in msgs) > 100
    held = json.loads(states.entries["press"][0])
    assert held["state"] in ("idle", "running")


async def test_a_replica_killed_mid_stream_changes_nothing() -> None:
    stream = Stream(170)
    configs = FakeKV()
    await configs.put("press", json.dumps(SIGNAL_TRIGGER).encode())

    # the reference: one replica, no fault
    ref_out, now = FakeCycleOutputs(), [0]
    await feed(engine(FakeKV(), configs, ref_out, now, stream), stream,
               [FakeMsg(k + 1) for k in range(170)], range(170), now)  # fmt: skip

    for cut in (23, 61, 100, 137):  # inside a cycle, at an end, at a start, ...
        states, out, now = FakeKV(), FakeCycleOutputs(), [0]
        msgs = [FakeMsg(k + 1) for k in range(170)]
        await feed(engine(states, configs, out, now, stream), stream, msgs, range(cut), now)
        if cut in (23, 137):  # inside a cycle: what came since its start is not written yet,
            assert msgs[cut - 1].acks == 0, cut  # so its frames are not acknowledged either
        # kill -9: what was staged is lost; JetStream delivers every unacknowledged frame again,
        # in order, to the next replica (a fresh engine on the same KV)
        first_unacked = next(k for k in range(cut) if msgs[k].acks == 0) if any(
            m.acks == 0 for m in msgs[:cut]) else cut  # fmt: skip
        redelivered = [FakeMsg(k + 1) for k in range(170)]
        await feed(engine(states, configs, out, now, stream), stream, redelivered,
                   range(first_unacked, 170), now)  # fmt: skip
        assert completed(out) == completed(ref_out), (cut, completed(out), completed(ref_out))
        assert {c: out.rows[c].completeness for c in completed(out)} == {
            c: ref_out.rows[c].completeness for c in completed(ref_out)
        }, cut
        assert not [r for r in out.rows.values() if r.state == "running"
                    and r.cycle_id not in {ev.cycle_id for ev in ref_out.events
                                           if ev.state == "running"}], cut  # fmt: skip
