"""Ingest against a real nats-server and PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from edge.publisher import FramePublisher, frame_message
from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, CONTENT_TYPE_JSON, Frame, Series
from services.common.config import CommonSettings
from services.ingest.app import serve
from services.ingest.config import Settings
from tests.conftest import eventually
from tests.helpers import dead_letters, frame_count, stats, stored_frames

pytestmark = pytest.mark.integration


def ingest_settings(**kw: object) -> Settings:
    return Settings(metrics_port=0, **kw)


async def test_simulated_frames_arrive_in_postgres_exactly_as_sent(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve(ingest_settings(), common, running.stop))
    sent: list[Frame] = []
    model = build_machine(stream_id=stream_id, sensors=16, rate_hz=1000, slow_rate_hz=1)
    result = await simulate(
        bus, model, SimulateOptions(speed=0, frames=120, frame_ms=100), on_frame=sent.append
    )
    assert result.frames == 120

    async def all_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 120

    await eventually(all_stored)
    stored = await stored_frames(common.database_url, stream_id)
    assert [f.seq for f in stored] == [f.seq for f in sent]
    assert all(a.equals(b) for a, b in zip(stored, sent, strict=True))
    total = sum(f.n_samples for f in sent)
    assert total == 120 * 12 * 100 + 12 * 4  # 12 fast sensors, 4 temperatures at 1 Hz
    assert await stats(common.database_url, stream_id) == (120, total)


async def test_the_same_frame_published_twice_is_stored_once(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve(ingest_settings(), common, running.stop))
    frame = Frame(stream_id, 5, (Series("p", np.arange(10, dtype="f8"), 1_000, 1_000),))
    publisher = FramePublisher(bus.js)
    await publisher.publish(frame)
    await publisher.publish(frame)
    await publisher.flush()
    assert publisher.duplicates == 1  # JetStream's de-duplication window caught the repeat
    # The same frame under another message id passes JetStream; the database key stops it.
    subject, payload, headers = frame_message(frame)
    headers[subjects.HEADER_MSG_ID] = "another-id"
    await bus.js.publish(subject, payload, headers=headers)
    marker = Frame(stream_id, 6, (Series("p", np.zeros(1), 99_000, 1_000),))
    await bus.js.publish(*frame_message(marker)[:2], headers=frame_message(marker)[2])

    async def marker_stored() -> bool:
        return await frame_count(common.database_url, stream_id) >= 2

    await eventually(marker_stored)
    assert await frame_count(common.database_url, stream_id) == 2
    assert await stats(common.database_url, stream_id) == (2, 11)


async def test_json_and_binary_frames_are_both_accepted(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve(ingest_settings(), common, running.stop))
    a = Frame(stream_id, 0, (Series("p", np.array([1.5, 2.5]), 10, 5),))
    b = Frame(
        stream_id, 1, (Series("p", np.array([3.5]), 20, 0, np.array([20]), np.array([64], "u1")),)
    )
    await FramePublisher(bus.js, encoding="binary").publish(a)
    json_pub = FramePublisher(bus.js, encoding="json")
    await json_pub.publish(b)
    await json_pub.flush()

    async def both() -> bool:
        return await frame_count(common.database_url, stream_id) == 2

    await eventually(both)
    stored = await stored_frames(common.database_url, stream_id)
    assert stored[0].equals(a)
    assert stored[1].equals(b)


async def test_malformed_frames_go_to_the_dead_letter_subject_with_the_reason(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve(ingest_settings(), common, running.stop))
    subject = subjects.samples(stream_id)
    await bus.js.publish(subject, b"VTF1garbage", headers={"Content-Type": CONTENT_TYPE_BINARY})
    await bus.js.publish(
        subject,
        json.dumps({"stream_id": stream_id, "seq": 1, "sensors": []}).encode(),
        headers={"Content-Type": CONTENT_TYPE_JSON},
    )
    wrong = Frame("other-stream", 2, (Series("p", np.ones(3), 0, 10),))
    _, payload, headers = frame_message(wrong)
    await bus.js.publish(subject, payload, headers=headers)
    good = Frame(stream_id, 3, (Series("p", np.ones(3), 0, 10),))
    await bus.js.publish(subject, frame_message(good)[1], headers=frame_message(good)[2])

    letters = await dead_letters(bus, "ingest", 3)
    by_field = {d.field: d for d in letters}
    assert set(by_field) == {"header", "sensors", "stream_id"}
    assert "past the end" in by_field["header"].reason
    assert "at least 1" in by_field["sensors"].reason
    assert "does not match subject" in by_field["stream_id"].reason
    assert all(d.service == "ingest" and d.subject.startswith(f"{subject}.") for d in letters)

    async def good_one_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 1

    await eventually(good_one_stored)  # bad frames never block the good ones behind them


async def test_registrations_are_mirrored_into_live_streams(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    from edge.registry_client import register

    running.start(serve(ingest_settings(), common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=3)
    kv = await bus.js.key_value(subjects.KV_STREAMS)
    await register(bus.js, kv, model.registration())

    async def row() -> tuple | None:
        async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
            cur = await conn.execute(
                "SELECT device_name, sensors FROM live_streams WHERE stream_id = %s", (stream_id,)
            )
            return await cur.fetchone()

    device, sensors = await eventually(row)
    assert device == "Simulated press"
    assert [s["id"] for s in sensors] == ["pressure_1", "pressure_2", "flow_1"]


async def test_frames_survive_a_database_restart(
    bus, common: CommonSettings, running, stream_id: str, pg_cluster
) -> None:
    if pg_cluster.server is None:
        pytest.skip("needs the embedded PostgreSQL to restart it")
    running.start(serve(ingest_settings(), common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=100)
    await simulate(bus, model, SimulateOptions(speed=0, frames=50))

    async def first_half() -> bool:
        return await frame_count(common.database_url, stream_id) == 50

    await eventually(first_half)
    pg_cluster.server.stop()
    sent: list[Frame] = []
    await simulate(bus, model, SimulateOptions(speed=0, frames=50), on_frame=sent.append)
    pg_cluster.server.start()

    async def all_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 100

    await eventually(all_stored, timeout=60)
    stored = {f.seq: f for f in await stored_frames(common.database_url, stream_id)}
    assert all(stored[f.seq].equals(f) for f in sent)


async def test_frames_survive_a_bus_restart(
    common: CommonSettings, running, stream_id: str, nats_server
) -> None:
    if isinstance(nats_server, str):
        pytest.skip("needs the embedded nats-server to restart it")
    from services.common.runtime import open_bus

    running.start(serve(ingest_settings(), common, running.stop))
    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=100)
    sent: list[Frame] = []
    publisher_bus = await open_bus(common, "test-publisher")
    await simulate(publisher_bus, model, SimulateOptions(speed=0, frames=40), on_frame=sent.append)
    await publisher_bus.close()

    async def first() -> bool:
        return await frame_count(common.database_url, stream_id) == 40

    await eventually(first)
    nats_server.stop()
    nats_server.start()  # same port, same store: JetStream keeps streams and consumers
    publisher_bus = await open_bus(common, "test-publisher-2")
    await simulate(publisher_bus, model, SimulateOptions(speed=0, frames=40), on_frame=sent.append)
    await publisher_bus.close()

    async def all_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 80

    await eventually(all_stored, timeout=60)
    stored = await stored_frames(common.database_url, stream_id)
    # a cleanly stopped publisher hands back unused sequence numbers: no gap in seq
    assert [f.seq for f in stored] == list(range(80))
    assert await stats(common.database_url, stream_id) == (80, sum(f.n_samples for f in sent))
