"""Thin handlers of the alerts service: rules against frames, analyses, cycle ends and time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas import subjects
from schemas.frames import Frame
from schemas.messages import (
    AlertChanged,
    AlertControlRequest,
    AlertRule,
    AnalysisCompleted,
    CycleStateChanged,
    RemoveAlertRule,
)
from schemas.timeutil import datetime_of, datetime_or_none, ns_of
from services.alerts.adapters import Alerts, CycleContext, Rules, RuleStates
from services.alerts.logic import (
    RateGuard,
    RuleState,
    Transition,
    acknowledge,
    comparable_rule,
    on_analysis,
    on_cycle,
    on_envelope,
    on_frame_arrival,
    on_samples,
    on_tick,
    trend_rule,
)
from services.common.consumer import Delivery
from services.common.responder import RequestError, per_stream
from services.common.runtime import every

log = logging.getLogger(__name__)
SAMPLE_KINDS = ("limit", "rate", "flatline")
READS_SAMPLES = (*SAMPLE_KINDS, "envelope")


class AlertEngine:
    """Keeps the rules, applies inputs rule by rule, records what changed."""

    def __init__(
        self,
        rules: Rules,
        states: RuleStates,
        alerts: Alerts,
        reraise_window_s: float,
        max_new_per_minute: int = 20,
        context: CycleContext | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.rules = rules
        self.states = states
        self.alerts = alerts
        self.window = reraise_window_s
        self.clock = clock
        self.guard = RateGuard(max_new_per_minute)
        self.context = context
        self.by_stream: dict[str, list[AlertRule]] = {}
        self._sensors: dict[str, tuple[str, ...]] = {}
        self.index: dict[str, AlertRule] = {}  # "<stream_id>.<rule_id>", shared with the notifier
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # whether this replica holds the partition of a stream's samples (data-gap rules run
        # where the samples are seen)
        self.owns: Callable[[str], bool] = lambda _: True
        # requests on vertac.alertctl.<stream_id>.<op>
        self.control = per_stream(
            {
                "ack": (AlertControlRequest, self.acknowledge),
                "rule_put": (AlertRule, self.put_rule),
                "rule_delete": (RemoveAlertRule, self.delete_rule),
            },
            "alert",
        )

    def rules_of(self, stream_id: str) -> list[AlertRule]:
        """A stream's rules and the built-in ones (:func:`comparable_rule`, :func:`trend_rule`)."""
        return [
            *self.by_stream.get(stream_id, []),
            comparable_rule(stream_id),
            trend_rule(stream_id),
        ]

    def sensors_of(self, stream_id: str) -> tuple[str, ...]:
        """The sensors whose samples a stream's rules read (frames are decoded for those)."""
        return self._sensors.get(stream_id, ())

    async def refresh(self) -> None:
        by_stream: dict[str, list[AlertRule]] = defaultdict(list)
        for rule in await self.rules.all():
            by_stream[rule.stream_id].append(rule)
        self.by_stream = dict(by_stream)
        self._sensors = {
            sid: tuple({r.sensor_id for r in rules if r.sensor_id and r.kind in READS_SAMPLES})
            for sid, rules in by_stream.items()
        }
        fresh = {f"{r.stream_id}.{r.rule_id}": r for rules in by_stream.values() for r in rules}
        self.index.clear()
        self.index.update(fresh)

    async def run_refresh(self, stop: asyncio.Event, every_s: float) -> None:
        await every(stop, every_s, self.refresh, "reading alert rules")

    async def _record(self, rule: AlertRule, transitions: list[Transition]) -> None:
        held = 0
        for t in transitions:
            if not self.guard.admit(rule.stream_id, t):
                held += t.state == "raised"
                continue
            await self._publish(rule.stream_id, rule.rule_id, rule.kind, rule.sensor_id, t)
        if held:
            await self._summary(rule.stream_id, self.clock(), held)

    async def _summary(self, stream_id: str, now: int, held: int) -> None:
        t = self.guard.summary_for(stream_id, now, held)
        if t is not None:
            await self._publish(stream_id, "_rate", "rate_limit", None, t)

    async def _publish(
        self, stream_id: str, rule_id: str, kind: str, sensor_id: str | None, t: Transition
    ) -> None:
        event = AlertChanged(
            alert_id=t.alert_id,
            stream_id=stream_id,
            rule_id=rule_id,
            kind=kind,
            severity=t.severity,
            state=t.state,
            message=t.message,
            at=datetime_of(t.at_ns),
            at_ns=t.at_ns,
            sensor_id=sensor_id,
            value=t.value,
            occurrences=t.occurrences,
            raised_at=datetime_or_none(t.raised_at_ns),
            acknowledged_by=t.user,
            comment=t.comment,
        )
        await self.alerts.record(event)
        log.info("alert", extra={"alert_id": t.alert_id, "state": t.state, "msg_text": t.message})

    async def _apply(
        self,
        rule: AlertRule,
        step: Callable[..., tuple[RuleState, list[Transition]]],
        *args: Any,
    ) -> None:
        state, revision = await self.states.load(rule, cached=True)
        new, transitions = step(rule, state, *args)
        if transitions or (new is not state and new != state):
            # about to record or write: from what KV holds now, not from what was kept
            fresh, fresh_revision = await self.states.load(rule)
            if fresh_revision != revision or fresh != state:
                state, revision = fresh, fresh_revision
                new, transitions = step(rule, state, *args)
        await self._record(rule, transitions)
        if new is not state and new != state:
            await self.states.save(rule, new, revision)

    async def on_frames(self, batch: list[Delivery[Frame]]) -> None:
        by_stream: dict[str, list[tuple[int, Frame]]] = defaultdict(list)
        for d in batch:
            by_stream[d.item.stream_id].append((d.msg.metadata.sequence.stream, d.item))
        now = self.clock()
        for stream_id, messages in by_stream.items():
            rules = self.by_stream.get(stream_id, [])
            if not rules:
                continue
            async with self.locks[stream_id]:
                for rule in rules:
                    if rule.kind == "data_gap":
                        await self._apply(rule, on_frame_arrival, now)
                    elif rule.kind == "envelope" and self.context is not None:
                        if any(f.has(rule.sensor_id or "") for _, f in messages):
                            started = await self.context.running_since(stream_id)
                            ref = await self.context.reference(stream_id, time.monotonic())
                            sensor = ref.sensors.get(rule.sensor_id or "") if ref else None
                            duration = ref.duration_s if ref else 0.0
                            await self._apply(
                                rule, _unapplied(on_envelope), messages,
                                started, sensor, duration, now, self.window,
                            )  # fmt: skip
                    elif rule.kind in SAMPLE_KINDS:
                        await self._apply(rule, _unapplied(on_samples), messages, now, self.window)

    async def on_acks(self, batch: list[Delivery[AlertControlRequest]]) -> None:
        """At a site: acknowledgements central sent, carried out as if asked here; one that
        cannot be (already acknowledged, no longer current, no such rule) is logged and
        dropped: central sees the alert's state as the site has it."""
        for d in batch:
            stream_id = subjects.stream_of(d.msg.subject)
            try:
                await self.acknowledge(stream_id, d.item)
            except RequestError as exc:
                log.warning("acknowledgement from central not carried out",
                            extra={"alert_id": d.item.alert_id, "status": exc.status,
                                   "reason": exc.message})  # fmt: skip

    async def on_analyses(self, batch: list[Delivery[AnalysisCompleted]]) -> None:
        for d in batch:
            result = d.item
            at = self.clock()
            async with self.locks[result.stream_id]:
                for rule in self.rules_of(result.stream_id):
                    if rule.kind in ("health", "contribution"):
                        await self._apply(rule, on_analysis, result, at, self.window)

    async def on_cycles(self, batch: list[Delivery[CycleStateChanged]]) -> None:
        for d in batch:
            event = d.item
            if event.state == "running":
                continue
            at = ns_of(event.at) if event.ended_ns is None else event.ended_ns
            async with self.locks[event.stream_id]:
                for rule in self.by_stream.get(event.stream_id, []):
                    if rule.kind == "abnormal_stop":
                        await self._apply(rule, on_cycle, event, at, self.window)

    async def tick(self) -> None:
        now = self.clock()
        for stream_id in list(self.guard.summary):
            await self._summary(stream_id, now, 0)
        for stream_id, rules in self.by_stream.items():
            gaps = [r for r in rules if r.kind == "data_gap"]
            if not gaps or not self.owns(stream_id):
                continue
            async with self.locks[stream_id]:
                for rule in gaps:
                    await self._apply(rule, on_tick, now, self.window)

    async def run_ticks(self, stop: asyncio.Event, every_s: float) -> None:
        await every(stop, every_s, self.tick, "alert tick")

    async def acknowledge(self, stream_id: str, request: AlertControlRequest) -> dict[str, str]:
        """Acknowledge one of the stream's alerts: ``{"alert_id", "state"}``; 404 when no rule
        owns it, 409 when it is no longer current or already acknowledged."""
        alert_id = request.alert_id

        def owner() -> AlertRule | None:
            rules = self.rules_of(stream_id)
            return next(
                (r for r in rules if alert_id.startswith(f"{stream_id}.{r.rule_id}.")), None
            )

        rule = owner()
        if rule is None:  # a rule another replica was given since this one last read them
            await self.refresh()
            rule = owner()
        if rule is None:
            raise RequestError(404, f"no rule of {stream_id} owns alert {alert_id!r}", "alert_id")
        async with self.locks[stream_id]:
            state, revision = await self.states.load(rule)
            if state.alert_id != alert_id:
                raise RequestError(
                    409, f"alert {alert_id!r} is no longer the rule's current alert", "alert_id"
                )
            new, transitions = acknowledge(state, request.user, request.comment, self.clock())
            if not transitions:
                raise RequestError(
                    409, f"alert {alert_id!r} is already {state.alert_state}", "alert_id"
                )
            await self._record(rule, transitions)
            await self.states.save(rule, new, revision)
        return {"alert_id": alert_id, "state": new.alert_state}

    async def put_rule(self, stream_id: str, rule: AlertRule) -> AlertRule:
        """Create or replace one of the stream's rules; it applies from now on."""
        if rule.stream_id != stream_id:
            raise RequestError(
                422, f"the rule names stream {rule.stream_id!r}, not {stream_id!r}", "stream_id"
            )
        await self.rules.put(rule)
        await self.refresh()
        return rule

    async def delete_rule(self, stream_id: str, request: RemoveAlertRule) -> dict[str, bool]:
        """Remove one of the stream's rules: ``{"removed": true}``; 404 when there is none."""
        if not await self.rules.delete(stream_id, request.rule_id):
            raise RequestError(404, f"no rule {request.rule_id!r} on {stream_id}", "rule_id")
        await self.refresh()
        return {"removed": True}


SamplesStep = Callable[..., tuple[RuleState, list[Transition]]]


def _unapplied(step: SamplesStep) -> SamplesStep:
    """``step`` over the samples of the messages (stream sequence, frame) that the rule's state
    has not applied yet. A state that changes is written with the last sequence it applied, so a
    redelivery of those messages (a replica died between writing and acknowledging) changes
    nothing; a state that does not change needs no mark, as applying them again changes
    nothing either."""

    def run(
        rule: AlertRule, s: RuleState, messages: list[tuple[int, Frame]], *args: Any
    ) -> tuple[RuleState, list[Transition]]:
        todo = [f for seq, f in messages if seq > s.applied_js_seq]
        t, v = _series(todo, rule.sensor_id)
        if not len(t):
            return s, []
        new, transitions = step(rule, s, t, v, *args)
        if new != s:
            new = new.model_copy(update={"applied_js_seq": max(seq for seq, _ in messages)})
        return new, transitions

    return run


def _series(frames: list[Frame], sensor_id: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The good samples of ``sensor_id`` in ``frames``, in time order, as float64."""
    ts, vs = [], []
    for f in frames:
        if sensor_id is None or not f.has(sensor_id):
            continue
        if not any(s.sensor_id == sensor_id for s in f.series):
            f = f.complete()  # decoded before this rule was read: once, the whole frame
        for s in f.series:
            if s.sensor_id == sensor_id and s.n:
                t, v = s.timestamps(), s.values
                if s.quality is not None:
                    good = s.quality >= 192
                    t, v = t[good], v[good]
                ts.append(t)
                vs.append(v)
    if not ts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if len(ts) == 1:
        t, v = ts[0], vs[0].astype(np.float64, copy=False)
    else:
        t, v = np.concatenate(ts), np.concatenate(vs).astype(np.float64, copy=False)
    if len(t) > 1 and bool((t[1:] < t[:-1]).any()):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    return t, v
