"""Operators' settings as their owners answer them, on in-memory fakes: the cycles service keeps
a stream's cycle configuration, the alerts service its rules and acknowledgements; each refusal
says its status and field, and what is kept applies at once."""

from __future__ import annotations

import json
from typing import Any

from schemas.messages import AlertRule, SensorSpec, StreamRegistered
from services.alerts.handlers import AlertEngine
from services.cycles.adapters import ConfigStore
from services.cycles.control import CycleControl
from tests.fakes import FakeAlerts, FakeKV, FakeRules, FakeRuleStates
from tests.scenarios import SIGNAL_TRIGGER

PRESS = StreamRegistered(
    stream_id="press-1",
    device_name="press 1",
    sensors=[SensorSpec(id="cycle_active"), SensorSpec(id="pressure")],
    registered_at="2026-01-01T00:00:00Z",
)
LIMIT = {"stream_id": "press-1", "rule_id": "hot", "kind": "limit", "sensor_id": "pressure",
         "hi": 180.0}  # fmt: skip


def cycles() -> tuple[CycleControl, ConfigStore, FakeKV]:
    kv = FakeKV()
    store = ConfigStore(kv, ttl_s=3600)  # type: ignore[arg-type]

    async def registered(stream_id: str) -> StreamRegistered | None:
        return PRESS if stream_id == PRESS.stream_id else None

    return CycleControl(store, registered), store, kv


async def asked(handle: Any, stream_id: str, op: str, body: object) -> tuple[int, Any]:
    status, data = await handle(stream_id, op, json.dumps(body).encode())
    return status, json.loads(data)


async def test_the_cycles_service_keeps_a_configuration_and_applies_it_at_once() -> None:
    control, store, kv = cycles()
    assert (await store.get("press-1")).trigger == "manual"  # read (and cached for an hour)
    status, body = await asked(control.handle, "press-1", "config", SIGNAL_TRIGGER)
    assert status == 200 and body["signal_sensor"] == "cycle_active"
    assert json.loads(kv.entries["press-1"][0])["trigger"] == "signal"
    assert (await store.get("press-1")).trigger == "signal"  # not after the cache's hour
    assert store.trigger_sensors("press-1") == ("cycle_active",)


async def test_a_refused_configuration_says_why_and_where_and_keeps_nothing() -> None:
    control, _, kv = cycles()
    refusals = [
        ("press-2", "config", SIGNAL_TRIGGER, 404, "stream_id"),
        ("press-1", "config", {**SIGNAL_TRIGGER, "signal_sensor": "door"}, 422, "signal_sensor"),
        ("press-1", "config", {**SIGNAL_TRIGGER, "trigger": "sometimes"}, 422, "trigger"),
        ("press 1", "config", SIGNAL_TRIGGER, 400, "stream_id"),
    ]
    for stream_id, op, body, status, field in refusals:
        got, answer = await asked(control.handle, stream_id, op, body)
        assert (got, answer["details"][0]["field"]) == (status, field), answer
    got, answer = await asked(control.handle, "press-1", "reset", SIGNAL_TRIGGER)
    assert got == 404 and "config" in answer["error"]
    assert kv.entries == {}


def alerts() -> tuple[AlertEngine, FakeRules, FakeRuleStates]:
    rules, states = FakeRules(), FakeRuleStates()
    engine = AlertEngine(rules, states, FakeAlerts(), reraise_window_s=300.0)  # type: ignore[arg-type]
    return engine, rules, states


async def test_the_alerts_service_keeps_a_rule_and_applies_it_at_once() -> None:
    engine, rules, _ = alerts()
    status, body = await asked(engine.control, "press-1", "rule_put", LIMIT)
    assert status == 200 and body["hi"] == 180.0
    assert [r.rule_id for r in rules.rules] == ["hot"]
    assert "hot" in {r.rule_id for r in engine.rules_of("press-1")}
    assert engine.sensors_of("press-1") == ("pressure",)  # its frames are decoded for it now
    status, body = await asked(engine.control, "press-1", "rule_delete", {"rule_id": "hot"})
    assert (status, body) == (200, {"removed": True})
    assert rules.rules == [] and engine.sensors_of("press-1") == ()
    status, body = await asked(engine.control, "press-1", "rule_delete", {"rule_id": "hot"})
    assert status == 404 and body["details"][0]["field"] == "rule_id"


async def test_a_refused_rule_says_why_and_where() -> None:
    engine, rules, _ = alerts()
    status, body = await asked(engine.control, "press-2", "rule_put", LIMIT)  # another stream's
    assert status == 422 and body["details"][0]["field"] == "stream_id"
    status, body = await asked(engine.control, "press-1", "rule_put", {**LIMIT, "hihi": 100.0})
    assert status == 422 and "hihi" in json.dumps(body)
    status, body = await asked(engine.control, "press-1", "rule_delete", {"rule_id": "a b"})
    assert status == 422 and body["details"][0]["field"] == "rule_id"
    assert rules.rules == []


async def test_an_acknowledgement_finds_a_rule_another_replica_was_given() -> None:
    """A rule kept by another replica is read again before an acknowledgement is refused."""
    engine, rules, _ = alerts()
    ack = {"alert_id": "press-1.hot.1", "user": "ana", "comment": ""}
    status, body = await asked(engine.control, "press-1", "ack", ack)
    assert status == 404 and body["details"][0]["field"] == "alert_id"
    await rules.put(AlertRule.model_validate(LIMIT))
    status, body = await asked(engine.control, "press-1", "ack", ack)
    assert status == 409 and "no longer the rule's current alert" in body["error"]
