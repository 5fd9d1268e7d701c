"""Thin handlers of the cycles service: load state, step the state machine, carry out outputs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from schemas import subjects
from schemas.frames import Frame
from schemas.messages import CycleCommand, CycleStateChanged, CycleStateRecord
from schemas.timeutil import ns_of
from services.common.consumer import Delivery
from services.cycles.adapters import (
    ConfigStore,
    CycleRows,
    Events,
    FrameReader,
    Recordings,
    StateStore,
    _dt,
)
from services.cycles.logic import (
    END_OF_STREAM,
    NS,
    Ended,
    FrameInfo,
    Ignored,
    Output,
    Started,
    on_command,
    on_frame,
    on_tick,
    record,
    signal_of,
)

log = logging.getLogger(__name__)


class FrameWindow:
    """The frames of each stream as this replica received them, kept while a cycle may need
    them, so a cycle's recording is cut from memory instead of being read back from JetStream.

    For a stream, ``since[stream]`` is the JetStream sequence from which every frame of the
    stream is held (frames arrive in stream order on the partition's consumer; a redelivered one
    replaces itself). A range that starts before it, or a stream whose frames passed the size
    limit, is read back from the bus as before: the window is only ever a shortcut.
    """

    def __init__(self, max_samples: int = 2_000_000) -> None:
        self.max_samples = max_samples
        self.frames: dict[str, dict[int, Frame]] = {}
        self.since: dict[str, int] = {}
        self.samples: dict[str, int] = {}

    def add(self, stream_id: str, js_seq: int, frame: Frame) -> None:
        held = self.frames.setdefault(stream_id, {})
        self.since.setdefault(stream_id, js_seq)
        if js_seq not in held:
            held[js_seq] = frame
            self.samples[stream_id] = self.samples.get(stream_id, 0) + frame.n_samples
        if self.samples[stream_id] > self.max_samples:  # a very long cycle: read it back
            self.drop(stream_id)
            self.since[stream_id] = 2**63 - 1

    def between(self, stream_id: str, first: int, last: int) -> list[Frame] | None:
        """The frames with JetStream sequence in [first, last], or None when not all are held."""
        held = self.frames.get(stream_id)
        if held is None or self.since.get(stream_id, first + 1) > first or not held:
            return None
        if max(held) < last:
            return None
        return [held[k] for k in sorted(held) if first <= k <= last]

    def keep_after(self, stream_id: str, js_seq: int) -> None:
        """Nothing at or before ``js_seq`` is needed any more (a cycle ended, or none runs)."""
        held = self.frames.get(stream_id)
        if not held:
            self.since.pop(stream_id, None)
            return
        for k in [k for k in held if k <= js_seq]:
            self.samples[stream_id] -= held.pop(k).n_samples
        self.since[stream_id] = js_seq + 1

    def drop(self, stream_id: str) -> None:
        self.frames.pop(stream_id, None)
        self.since.pop(stream_id, None)
        self.samples.pop(stream_id, None)

    def forget(self, partition: int) -> None:
        """A partition taken over: what another replica received meanwhile is not held here."""
        for sid in {*self.frames, *self.since}:
            if subjects.partition_of(sid) == partition:
                self.drop(sid)


class CycleEngine:
    """Applies frames, commands and time to each stream's state, one stream at a time."""

    def __init__(
        self,
        states: StateStore,
        configs: ConfigStore,
        reader: FrameReader,
        recordings: Recordings,
        events: Events,
        rows: CycleRows,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.states = states
        self.configs = configs
        self.reader = reader
        self.recordings = recordings
        self.events = events
        self.rows = rows
        self.clock = clock
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.window = FrameWindow()
        self.known: set[str] = set()
        self.watching_since_ns = clock()
        # (since when this process watches the stream, samples still waiting on the bus) for a
        # stream whose partition this replica holds; None for the others' streams
        self.ownership: Callable[[str], tuple[int, int] | None] = lambda _: (
            self.watching_since_ns,
            0,
        )

    @contextlib.contextmanager
    def _unsure(self, stream_id: str) -> Iterator[None]:
        """A handler that fails leaves the stream's state as KV has it, not as it was kept."""
        try:
            yield
        except BaseException:
            self.states.forget_stream(stream_id)
            raise

    async def on_frames(self, batch: list[Delivery[Frame]]) -> None:
        by_stream: dict[str, list[Delivery[Frame]]] = defaultdict(list)
        for d in batch:
            by_stream[d.item.stream_id].append(d)
        for stream_id, deliveries in by_stream.items():
            self.known.add(stream_id)
            async with self.locks[stream_id]:
                with self._unsure(stream_id):
                    state, revision = await self.states.load(stream_id)
                    cfg = await self.configs.get(stream_id)
                    for d in deliveries:
                        t, v = (
                            signal_of(d.item, cfg.signal_sensor)
                            if cfg.trigger == "signal"
                            else (None, None)
                        )
                        info = FrameInfo(
                            d.item.seq, d.msg.metadata.sequence.stream, d.item.first_ns(),
                            d.item.last_ns(), t, v,
                        )  # fmt: skip
                        js_seq = d.msg.metadata.sequence.stream
                        self.window.add(stream_id, js_seq, d.item)
                        before = state
                        state, outputs = on_frame(state, cfg, info, self.clock())
                        await self._carry_out(before, outputs)
                        if state.state == "idle":
                            self.window.keep_after(stream_id, js_seq)  # no cycle needs it
                    await self.states.save(state, revision)

    async def on_commands(self, batch: list[Delivery[CycleCommand]]) -> None:
        for d in batch:
            cmd = d.item
            self.known.add(cmd.stream_id)
            async with self.locks[cmd.stream_id]:
                with self._unsure(cmd.stream_id):
                    state, revision = await self.states.load(cmd.stream_id)
                    cfg = await self.configs.get(cmd.stream_id)
                    at_ns = ns_of(cmd.issued_at)
                    before = state
                    state, outputs = on_command(
                        state, cfg, cmd.command, at_ns, cmd.reason, self.clock()
                    )
                    await self._carry_out(before, outputs)
                    await self.states.save(state, revision)

    async def tick(self) -> None:
        for stream_id in list(self.known):
            if self.ownership(stream_id) is None:
                continue
            async with self.locks[stream_id]:
                owned = self.ownership(stream_id)  # again: a handler may have held the lock
                if owned is None:
                    continue
                since_ns, backlog = owned
                with self._unsure(stream_id):
                    state, revision = await self.states.load(stream_id)
                    if state.state == "idle":
                        continue
                    cfg = await self.configs.get(stream_id)
                    before = state
                    state, outputs = on_tick(state, cfg, self.clock(), since_ns, backlog)
                    if outputs:
                        await self._carry_out(before, outputs)
                        await self.states.save(state, revision)

    async def run_ticks(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        self.known.update(await self.states.streams())
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # the tick loop must outlive one bad stream; it is logged
                log.exception("tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def _carry_out(self, before: CycleStateRecord, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Ignored):
                log.info(
                    "command ignored", extra={"stream_id": before.stream_id, "reason": out.reason}
                )
            elif isinstance(out, Started):
                event = CycleStateChanged(
                    stream_id=before.stream_id, cycle_id=out.cycle_id, state="running",
                    at=_dt(out.at_ns), reason=out.reason, cycle_no=out.cycle_no,
                    started_at=_dt(out.at_ns),
                )  # fmt: skip
                await self.rows.upsert(event, out.reason)
                await self.events.publish(event)
                log.info("cycle started", extra={"cycle_id": out.cycle_id, "reason": out.reason})
            elif isinstance(out, Ended):
                await self._finish(before.stream_id, out)

    async def _finish(self, stream_id: str, ended: Ended) -> None:
        last = ended.end_js_seq
        frames = None
        if last == END_OF_STREAM:
            last = await self.reader.last_seq()
        else:
            frames = self.window.between(stream_id, ended.start_js_seq, last)
        if frames is None:
            frames = await self.reader.between(stream_id, ended.start_js_seq, last)
        rec = record(stream_id, ended.cycle_no, ended.start_ns, ended.end_ns, frames)
        name = await self.recordings.put(ended.cycle_id, rec.frame)
        event = CycleStateChanged(
            stream_id=stream_id, cycle_id=ended.cycle_id, state=ended.state,
            at=_dt(ended.end_ns), reason=ended.reason, cycle_no=ended.cycle_no,
            started_at=_dt(ended.start_ns), ended_at=_dt(ended.end_ns),
            duration_s=(ended.end_ns - ended.start_ns) / NS, samples=rec.samples, frames=rec.frames,
            gaps=rec.gaps, late_frames=rec.late_frames, replayed_frames=rec.replayed_frames,
            completeness=rec.completeness, recording=name,
        )  # fmt: skip
        await self.rows.upsert(event)
        await self.events.publish(event)
        log.info(
            "cycle ended",
            extra={"cycle_id": ended.cycle_id, "state": ended.state, "reason": ended.reason,
                   "frames": rec.frames, "completeness": round(rec.completeness, 4)},
        )  # fmt: skip
