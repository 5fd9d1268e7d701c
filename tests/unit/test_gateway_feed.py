"""The gateway's live fan-out (:class:`FeedHub`, :class:`StreamFeed`) on an in-memory bus: who
subscribes when, what every viewer of a stream receives, and what a slow viewer or a bad message
costs. The same paths against a real nats-server and real WebSockets are in
tests/integration/test_fanout.py."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge.simulator import Simulation, build_machine
from schemas import subjects
from schemas.frames import encode_binary
from schemas.messages import AlertChanged, CycleStateChanged
from schemas.timeutil import NS
from services.gateway.fanout import FeedHub, Viewer

START = 1_750_000_000 * NS
Callback = Callable[[Any], Awaitable[None]]


class FakeSub:
    def __init__(self, bus: FakeNats, subject: str, cb: Callback) -> None:
        self.bus, self.subject, self.cb = bus, subject, cb

    async def unsubscribe(self) -> None:
        self.bus.subs.remove(self)


class FakeNats:
    """Core NATS subscriptions in memory: ``deliver`` hands a message to every subscriber of
    its subject (``*`` and ``>`` wildcards as NATS matches them)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.subs: list[FakeSub] = []
        self.fail_at = fail_at  # the n-th subscribe raises, as a connection that drops

    async def subscribe(self, subject: str, cb: Callback) -> FakeSub:
        if self.fail_at is not None and len(self.subs) + 1 == self.fail_at:
            raise ConnectionError("connection closed")
        sub = FakeSub(self, subject, cb)
        self.subs.append(sub)
        return sub

    async def flush(self) -> None:
        return None

    async def deliver(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> int:
        msg = SimpleNamespace(subject=subject, data=data, headers=headers)
        hit = [s for s in list(self.subs) if _matches(s.subject, subject)]
        for sub in hit:
            await sub.cb(msg)
        return len(hit)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def frames(stream_id: str, n: int, rate_hz: int = 100) -> list[bytes]:
    """``n`` consecutive 100 ms frames of a simulated machine, binary, as the edge sends them."""
    machine = build_machine(stream_id=stream_id, sensors=3, rate_hz=rate_hz, cycle_s=4)
    sim = Simulation(machine, START)
    step = NS // 10
    return [encode_binary(sim.frame(i, START + i * step, START + (i + 1) * step)) for i in range(n)]


def updates(viewer: Viewer) -> list[dict[str, Any]]:
    out = []
    while not viewer.outbox.empty():
        out.append(json.loads(viewer.outbox.get_nowait()))
    return out


@pytest.fixture
async def hub():  # type: ignore[no-untyped-def]
    bus = FakeNats()
    # a long interval: the tests flush by hand, the pump never fires during a test
    h = FeedHub(bus, interval_ms=60_000, points_per_second=50)  # type: ignore[arg-type]
    yield h
    await h.close()


async def test_the_first_viewer_subscribes_the_last_one_to_leave_unsubscribes(hub) -> None:
    a, b = Viewer(8), Viewer(8)
    await hub.join("press-1", a)
    assert sorted(s.subject for s in hub.nc.subs) == sorted([
        subjects.samples("press-1"), subjects.cycles_of("press-1"),
        subjects.analysis("press-1"), subjects.alerts_of("press-1"),
    ])  # fmt: skip
    await hub.join("press-1", b)
    assert hub.subscriptions == 4 and hub.viewers == 2  # shared, not per viewer
    await hub.join("press-2", Viewer(8))
    assert hub.subscriptions == 8
    await hub.leave("press-1", a)
    assert hub.subscriptions == 8
    await hub.leave("press-1", b)
    assert hub.subscriptions == 4 and "press-1" not in hub.feeds
    assert all("press-1" not in s.subject for s in hub.nc.subs)


async def test_a_subscription_that_fails_leaves_none_behind() -> None:
    bus = FakeNats(fail_at=3)
    h = FeedHub(bus, interval_ms=60_000, points_per_second=50)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await h.join("press-1", Viewer(8))
    assert bus.subs == [] and h.feeds == {}
    await h.close()


async def test_every_viewer_gets_the_same_decimated_update_with_the_true_extremes(hub) -> None:
    a, b = Viewer(8), Viewer(8)
    feed = await hub.join("press-1", a)
    await hub.join("press-1", b)
    sent = frames("press-1", 10)  # one second at 100 Hz
    for data in sent:
        assert await hub.nc.deliver(subjects.samples("press-1"), data) == 1
    feed.flush()
    [ua], [ub] = updates(a), updates(b)
    assert ua["data"] == ub["data"]  # encoded once, the same for everyone
    assert ua["type"] == "samples" and ua["data"]["seq"] == 9
    traces = ua["data"]["sensors"]
    assert len(traces) >= 3
    # what the frames held, decoded independently of the gateway
    from schemas.frames import decode

    decoded = [decode(d, None) for d in sent]
    for sensor_id, trace in traces.items():
        values = np.concatenate(
            [s.values for f in decoded for s in f.series if s.sensor_id == sensor_id]
        )
        assert trace["count"] == len(values) == 100
        assert len(trace["t_ms"]) <= hub.buckets  # 50 points a second: reduced, not every sample
        assert min(trace["min"]) == pytest.approx(float(values.min()))
        assert max(trace["max"]) == pytest.approx(float(values.max()))
        assert trace["last"] == pytest.approx(float(values[-1]))
    feed.flush()
    assert updates(a) == []  # nothing new, nothing sent


async def test_events_are_forwarded_in_the_v02_envelope_and_bad_messages_cost_nothing(hub) -> None:
    viewer = Viewer(8)
    feed = await hub.join("press-1", viewer)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    event = CycleStateChanged(
        stream_id="press-1", cycle_id="c-1", state="running", at=at, cycle_no=1
    )
    await hub.nc.deliver(subjects.cycles("press-1", "started"), event.model_dump_json().encode())
    alert = AlertChanged(alert_id="press-1.r.1", stream_id="press-1", rule_id="r", kind="limit",
                         severity="warning", state="raised", message="p high", at=at)  # fmt: skip
    await hub.nc.deliver(subjects.alerts("press-1", "warning"), alert.model_dump_json().encode())
    await hub.nc.deliver(subjects.cycles("press-1", "completed"), b"{not json")
    await hub.nc.deliver(subjects.samples("press-1"), b"VTF1 truncated")
    await hub.nc.deliver(subjects.samples("press-1"), frames("press-1", 1)[0])
    feed.flush()
    got = updates(viewer)
    assert [u["type"] for u in got] == ["state_change", "alert", "samples"]
    assert got[0]["data"]["stream_id"] == "press-1"
    assert got[0]["data"]["event"]["cycle_id"] == "c-1"
    assert got[1]["data"]["alert"]["alert_id"] == "press-1.r.1"
    assert got[2]["data"]["seq"] == 0


async def test_a_slow_viewer_skips_updates_and_the_others_get_every_one(hub) -> None:
    slow, fast = Viewer(2), Viewer(64)
    feed = await hub.join("press-1", slow)
    await hub.join("press-1", fast)
    for data in frames("press-1", 10):
        await hub.nc.deliver(subjects.samples("press-1"), data)
        feed.flush()  # one update per frame
        updates(fast)  # the fast one reads every time; the slow one never does
    assert fast.skipped == 0
    assert slow.skipped == 8 and slow.outbox.qsize() == 2
    await hub.leave("press-1", slow)
    assert hub.skipped == 8  # still counted once its viewer has gone
