"""The cycles service's configuration store: with one read of the whole bucket, every stream's
configuration comes from one request per refresh; a changed, deleted, malformed or missing
record is read as the per-key store reads it, and a failing bulk read falls back to it."""

from __future__ import annotations

import json

from services.cycles.adapters import ConfigStore
from tests.fakes import FakeKV
from tests.scenarios import SIGNAL_TRIGGER


def bucket() -> dict[str, bytes]:
    return {
        "press-1": json.dumps(SIGNAL_TRIGGER).encode(),
        "press-2": json.dumps({**SIGNAL_TRIGGER, "signal_sensor": "running"}).encode(),
        "press-3": b'{"trigger": "sometimes"}',  # malformed: manual, with a log line
    }


async def test_every_stream_comes_from_one_read_per_refresh() -> None:
    values, reads = bucket(), []

    async def read_all() -> dict[str, bytes]:
        reads.append(1)
        return dict(values)

    store = ConfigStore(FakeKV(), ttl_s=3600, read_all=read_all)  # type: ignore[arg-type]
    got = {s: await store.get(s) for s in ("press-1", "press-2", "press-3", "press-4")}
    assert len(reads) == 1
    assert got["press-1"].trigger == "signal" and got["press-2"].signal_sensor == "running"
    assert got["press-3"].trigger == "manual" and got["press-4"].trigger == "manual"
    assert (
        store.trigger_sensors("press-2") == ("running",) and store.trigger_sensors("press-4") == ()
    )

    store.ttl_s = 0.0  # every get refreshes from here on
    values["press-4"] = values.pop("press-1")  # press-1 deleted, press-4 configured
    assert (await store.get("press-1")).trigger == "manual"
    assert (await store.get("press-4")).trigger == "signal"
    assert len(reads) == 3


async def test_a_failing_bulk_read_falls_back_to_the_streams_own_key() -> None:
    kv = FakeKV()
    await kv.put("press-1", bucket()["press-1"])

    async def read_all() -> dict[str, bytes]:
        raise TimeoutError("no answer")

    store = ConfigStore(kv, ttl_s=0.0, read_all=read_all)  # type: ignore[arg-type]
    assert (await store.get("press-1")).trigger == "signal"
    assert (await store.get("press-9")).trigger == "manual"
