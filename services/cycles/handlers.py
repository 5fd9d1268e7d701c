"""Thin handlers of the cycles service: load state, step the state machine, carry out outputs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from schemas import subjects
from schemas.frames import Frame
from schemas.messages import CycleCommand, CycleStateChanged, CycleStateRecord
from schemas.timeutil import NS, datetime_of, ns_of
from services.common.consumer import Delivery
from services.common.failures import TransientError
from services.common.pull import ack_all
from services.common.runtime import every
from services.cycles.adapters import (
    ConfigStore,
    CycleRows,
    Events,
    FrameReader,
    Recordings,
    StateConflict,
    StateStore,
)
from services.cycles.logic import (
    END_OF_STREAM,
    Ended,
    FrameInfo,
    Ignored,
    Output,
    Started,
    on_command,
    on_frame,
    on_tick,
    signal_of,
)
from services.cycles.recording import record

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
    """Applies frames, commands and time to each stream's state, one stream at a time.

    A stream's state is written to KV when a cycle starts or ends (before anything else may
    happen), and otherwise at most every ``save_every_s``: its frames are acknowledged once the
    state that holds them is written, so after a crash they are applied again, exactly once.
    """

    def __init__(
        self,
        states: StateStore,
        configs: ConfigStore,
        reader: FrameReader,
        recordings: Recordings,
        events: Events,
        rows: CycleRows,
        clock: Callable[[], int] = time.time_ns,
        save_every_s: float = 1.0,
    ) -> None:
        self.states = states
        self.configs = configs
        self.reader = reader
        self.recordings = recordings
        self.events = events
        self.rows = rows
        self.clock = clock
        self.save_every_s = save_every_s
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.window = FrameWindow()
        self.known: set[str] = set()
        self.unacked: dict[str, list[Msg]] = {}  # frames applied to a state not written yet
        self._background: set[asyncio.Future[None]] = set()
        self.watching_since_ns = clock()
        # (since when this process watches the stream, samples still waiting on the bus) for a
        # stream whose partition this replica holds; None for the others' streams
        self.ownership: Callable[[str], tuple[int, int] | None] = lambda _: (
            self.watching_since_ns,
            0,
        )
        # whether this replica's lease on the stream's partition is certain to be alive: no
        # cycle starts or ends, and no state is written, on a lease that may have passed on
        self.holds: Callable[[str], bool] = lambda _: True

    @contextlib.contextmanager
    def _unsure(
        self, stream_id: str, before: tuple[CycleStateRecord, int | None]
    ) -> Iterator[None]:
        """A handler that fails part-way leaves the stream's state as it was before it began;
        one whose state was written by another replica meanwhile gives its frames back."""
        try:
            yield
        except StateConflict:
            self._give_back(stream_id)
            raise
        except BaseException:
            self.states.restore(stream_id, before)
            raise

    def _give_back(self, stream_id: str) -> None:
        self.states.forget_stream(stream_id)
        msgs = self.unacked.pop(stream_id, [])
        if msgs:
            task = asyncio.ensure_future(_quietly(asyncio.gather(*(m.nak() for m in msgs))))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _check_lease(self, stream_id: str) -> None:
        if not self.holds(stream_id):
            raise TransientError(f"the lease on {stream_id}'s partition is not confirmed")

    async def _save(self, state: CycleStateRecord, revision: int | None) -> None:
        """Write the state now and acknowledge the frames it holds."""
        self._check_lease(state.stream_id)
        await self.states.save(state, revision)
        await ack_all(self.unacked.pop(state.stream_id, []))

    async def on_frames(self, batch: list[Delivery[Frame]]) -> None:
        by_stream: dict[str, list[Delivery[Frame]]] = defaultdict(list)
        for d in batch:
            by_stream[d.item.stream_id].append(d)
        for stream_id, deliveries in by_stream.items():
            self.known.add(stream_id)
            async with self.locks[stream_id]:
                before = await self.states.load(stream_id)
                with self._unsure(stream_id, before):
                    state, revision = before
                    cfg = await self.configs.get(stream_id)
                    changed = False
                    for d in deliveries:
                        t, v = (
                            signal_of(d.item, cfg.signal_sensor)
                            if cfg.trigger == "signal"
                            else (None, None)
                        )
                        js_seq = d.msg.metadata.sequence.stream
                        info = FrameInfo(
                            d.item.seq, js_seq, d.item.first_ns(), d.item.last_ns(), t, v
                        )  # fmt: skip
                        self.window.add(stream_id, js_seq, d.item)
                        previous = state
                        state, outputs = on_frame(state, cfg, info, self.clock())
                        if outputs:
                            self._check_lease(stream_id)
                            await self._carry_out(previous, outputs)
                            changed = True
                        if state.state == "idle":
                            self.window.keep_after(stream_id, js_seq)  # no cycle needs it
                    self.unacked.setdefault(stream_id, []).extend(d.msg for d in deliveries)
                    self.states.stage(state, revision)
                    if changed or stream_id in self.states.due(self.save_every_s):
                        await self._save(state, revision)

    async def on_commands(self, batch: list[Delivery[CycleCommand]]) -> None:
        for d in batch:
            cmd = d.item
            self.known.add(cmd.stream_id)
            async with self.locks[cmd.stream_id]:
                before = await self.states.load(cmd.stream_id)
                with self._unsure(cmd.stream_id, before):
                    state, revision = before
                    cfg = await self.configs.get(cmd.stream_id)
                    at_ns = ns_of(cmd.issued_at)
                    state, outputs = on_command(
                        before[0], cfg, cmd.command, at_ns, cmd.reason, self.clock()
                    )
                    self._check_lease(cmd.stream_id)
                    await self._carry_out(before[0], outputs)
                    await self._save(state, revision)

    async def flush(self, stream_ids: list[str] | None = None) -> None:
        """Write the staged state of ``stream_ids`` (those due when None) and acknowledge
        their frames; a stream that cannot be written now is tried again on the next call."""
        for stream_id in self.states.due(self.save_every_s) if stream_ids is None else stream_ids:
            async with self.locks[stream_id]:
                if not self.states.staged(stream_id):
                    continue
                before = await self.states.load(stream_id)
                with self._unsure(stream_id, before):
                    await self._save(*before)

    def streams_of(self, partition: int) -> list[str]:
        return [s for s in self.known if subjects.partition_of(s) == partition]

    async def tick(self) -> None:
        try:
            await self.flush()
        except Exception:  # written again on the next tick; the frames stay unacknowledged
            log.warning("cycle state not written yet", exc_info=True)
        for stream_id in list(self.known):
            if self.ownership(stream_id) is None or not self.holds(stream_id):
                continue  # not this replica's, or its lease is not confirmed: nothing to judge
            async with self.locks[stream_id]:
                owned = self.ownership(stream_id)  # again: a handler may have held the lock
                if owned is None:
                    continue
                since_ns, backlog = owned
                before = await self.states.load(stream_id)
                with self._unsure(stream_id, before):
                    state, revision = before
                    if state.state == "idle":
                        continue
                    cfg = await self.configs.get(stream_id)
                    state, outputs = on_tick(before[0], cfg, self.clock(), since_ns, backlog)
                    if outputs:
                        self._check_lease(stream_id)
                        await self._carry_out(before[0], outputs)
                        await self._save(state, revision)

    async def run_ticks(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        self.known.update(await self.states.streams())
        await every(stop, every_s, self.tick, "tick")

    async def _carry_out(self, before: CycleStateRecord, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Ignored):
                log.info(
                    "command ignored", extra={"stream_id": before.stream_id, "reason": out.reason}
                )
            elif isinstance(out, Started):
                event = CycleStateChanged(
                    stream_id=before.stream_id, cycle_id=out.cycle_id, state="running",
                    at=datetime_of(out.at_ns), reason=out.reason, cycle_no=out.cycle_no,
                    started_at=datetime_of(out.at_ns), started_ns=out.at_ns,
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
            at=datetime_of(ended.end_ns), reason=ended.reason, cycle_no=ended.cycle_no,
            started_at=datetime_of(ended.start_ns), ended_at=datetime_of(ended.end_ns),
            duration_s=(ended.end_ns - ended.start_ns) / NS, samples=rec.samples, frames=rec.frames,
            gaps=rec.gaps, late_frames=rec.late_frames, replayed_frames=rec.replayed_frames,
            completeness=rec.completeness, recording=name, started_ns=ended.start_ns,
            ended_ns=ended.end_ns,
        )  # fmt: skip
        await self.rows.upsert(event)
        await self.events.publish(event)
        log.info(
            "cycle ended",
            extra={"cycle_id": ended.cycle_id, "state": ended.state, "reason": ended.reason,
                   "frames": rec.frames, "completeness": round(rec.completeness, 4)},
        )  # fmt: skip


async def _quietly(acknowledgement: Awaitable[Any]) -> None:
    """A lost nak or ack costs one redelivery after ``ack_wait``, which changes nothing."""
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await acknowledgement
