"""The alert engine against in-memory rule states: frames delivered again after a replica died
between writing a rule's state and acknowledging them raise nothing twice."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from schemas.frames import Frame, Series
from schemas.messages import AlertChanged, AlertRule
from services.alerts.handlers import AlertEngine
from services.alerts.logic import RuleState
from services.common.consumer import Delivery

MS = 1_000_000
RULE = AlertRule(rule_id="hi", stream_id="s-01", kind="limit", sensor_id="p", hi=0.5)


class States:
    """Rule states as KV keeps them: a value and a revision per rule."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[RuleState, int]] = {}

    async def load(self, rule: AlertRule, cached: bool = False) -> tuple[RuleState, int | None]:
        return self.kv.get(rule.rule_id, (RuleState(), None))

    async def save(self, rule: AlertRule, state: RuleState, revision: int | None) -> None:
        assert self.kv.get(rule.rule_id, (None, None))[1] == revision
        self.kv[rule.rule_id] = (state, (revision or 0) + 1)

    def forget(self) -> None:
        pass


class Events:
    def __init__(self) -> None:
        self.recorded: list[AlertChanged] = []

    async def record(self, event: AlertChanged) -> None:
        self.recorded.append(event)


class Rules:
    async def all(self) -> list[AlertRule]:
        return [RULE]


def delivery(js_seq: int, values: list[float]) -> Delivery[Frame]:
    series = Series("p", np.asarray(values, dtype=np.float64), js_seq * 1000 * MS, 10 * MS)
    frame = Frame("s-01", js_seq, (series,))
    msg: Any = SimpleNamespace(metadata=SimpleNamespace(sequence=SimpleNamespace(stream=js_seq)))
    return Delivery(msg, frame)


async def engine() -> tuple[AlertEngine, Events]:
    events = Events()
    e = AlertEngine(Rules(), States(), events, reraise_window_s=60.0)  # type: ignore[arg-type]
    await e.refresh()
    return e, events


async def test_a_batch_delivered_again_after_its_state_was_written_raises_nothing_twice() -> None:
    e, events = await engine()
    batch = [delivery(1, [0.0, 1.0, 1.0]), delivery(2, [1.0, 0.0, 0.0]), delivery(3, [1.0])]
    await e.on_frames(batch)
    first = [(x.state, x.occurrences, x.at) for x in events.recorded]
    assert first == [
        ("raised", 1, first[0][2]),
        ("cleared", 1, first[1][2]),
        ("raised", 2, first[2][2]),
    ]
    # the replica died after writing the state, before acknowledging: the same batch again,
    # then what follows it
    await e.on_frames(batch)
    assert len(events.recorded) == 3
    await e.on_frames([delivery(4, [0.0])])
    assert [(x.state, x.occurrences) for x in events.recorded[3:]] == [("cleared", 2)]


async def test_a_batch_that_changes_nothing_writes_no_state() -> None:
    e, events = await engine()
    await e.on_frames([delivery(1, [0.0, 0.1])])
    assert events.recorded == []
    assert e.states.kv == {}  # type: ignore[attr-defined]
    await e.on_frames([delivery(2, [0.0, 0.9])])
    state, revision = e.states.kv["hi"]  # type: ignore[attr-defined]
    assert (state.applied_js_seq, revision, state.alert_state) == (2, 1, "raised")
