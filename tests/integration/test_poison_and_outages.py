"""Every failure classified, against a real nats-server and PostgreSQL: poison is dead-lettered
with its reason and never stops a service; an outage is waited out and dead-letters nothing."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from datetime import UTC, datetime

import msgpack
import numpy as np
import pytest
from nats.js.errors import KeyNotFoundError

from edge.publisher import FramePublisher
from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, CONTENT_TYPE_JSON, Frame, Series, encode_binary
from schemas.messages import CycleCommand
from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.common.config import CommonSettings
from services.common.consumer import Delivery, DurableConsumer
from services.common.decoding import decode_frame
from services.common.failures import TransientError
from services.common.metrics import Metrics
from services.cycles.app import serve as serve_cycles
from services.cycles.config import Settings as CyclesSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.helpers import dead_letters, frame_count

pytestmark = pytest.mark.integration


def good_frame(stream_id: str, seq: int) -> Frame:
    return Frame(stream_id, seq, (Series("p", np.arange(10, dtype="f8"), seq * 10**9, 10**8),))


def with_header(frame: Frame, **changes: object) -> bytes:
    """``frame`` in the binary layout with header fields replaced (as a broken publisher would)."""
    raw = encode_binary(frame)  # compact: its header fields are sent_ns, seq, table, ...
    (length,) = struct.unpack_from("<I", raw, 4)
    header = msgpack.unpackb(raw[8 : 8 + length])
    header.update(changes)
    packed = msgpack.packb(header)
    return raw[:4] + struct.pack("<I", len(packed)) + packed + raw[8 + length :]


def poison(stream_id: str) -> list[tuple[bytes, dict[str, str], str]]:
    """(payload, headers, field the dead letter must name) of messages seen crashing services."""
    f = good_frame(stream_id, 999)
    binary = {"Content-Type": CONTENT_TYPE_BINARY}
    as_json = {"Content-Type": CONTENT_TYPE_JSON}
    big_ts = json.dumps(
        {"stream_id": stream_id, "seq": 7, "sensors": [
            {"sensor_id": "p", "values": [1.0], "timestamps_ns": [1e19]}]}
    ).encode()  # fmt: skip
    near_end = Frame(stream_id, 998, (Series("p", np.zeros(10), 2**63 - 5, 1),))
    back = Frame(stream_id, 997, (
        Series("p", np.zeros(3), 10, 0, np.array([10, 30, 20], dtype=np.int64)),))  # fmt: skip
    return [
        (encode_binary(near_end), binary, "sensors[0].t0"),
        (encode_binary(back, shuffled=True), binary, "sensors[0].timestamps"),
        (with_header(f, sent_ns="abc"), binary, "sent_ns"),
        (with_header(f, sent_ns=[1]), binary, "sent_ns"),
        (with_header(f, seq=2**63), binary, "seq"),
        # a compact frame whose sensor table gives two dtypes for one id
        (
            with_header(
                f,
                table=msgpack.packb({"stream_id": stream_id, "ids": ["p"], "dtypes": ["f8", "f4"]}),
            ),
            binary,
            "table.dtypes",
        ),
        (big_ts, as_json, "sensors.0.timestamps_ns.0"),
        (b'{"stream_id": "x", "seq": Infinity}', as_json, "seq"),
        (os.urandom(900 * 1024), {}, ""),
    ]


@pytest.mark.timeout(240)
async def test_poison_frames_are_dead_lettered_by_every_consumer_and_good_frames_still_land(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    running.start(serve_cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop))
    running.start(serve_alerts(AlertsSettings(metrics_port=0), common, running.stop))
    publisher = FramePublisher(bus.js)
    bad = poison(stream_id)
    for i, (payload, headers, _) in enumerate(bad):
        await publisher.publish(good_frame(stream_id, 2 * i))
        await publisher.flush()
        await bus.js.publish(subjects.samples(stream_id), payload, headers=headers)
        await publisher.publish(good_frame(stream_id, 2 * i + 1))
    await publisher.flush()

    async def good_ones_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 2 * len(bad)

    await eventually(good_ones_stored, timeout=90)
    for service in ("ingest", "cycles", "alerts"):
        letters = await dead_letters(bus, service, len(bad))
        assert len(letters) == len(bad), service
        for _, _, want in bad:
            if want:
                assert any(want in d.field for d in letters), (
                    service, want, [(d.field, d.reason) for d in letters])  # fmt: skip
        big = next(d for d in letters if d.payload_bytes > 800 * 1024)
        assert not big.payload_inline
        assert big.payload_b64 == ""
        stored = await bus.js.get_msg(big.stream, big.stream_seq)
        assert len(stored.data) == big.payload_bytes  # kept by reference, still readable
        assert all(d.reason and d.error_type for d in letters)
    assert running.failures() == []


async def test_nan_or_infinity_of_good_quality_is_not_stored_as_a_value(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    publisher = FramePublisher(bus.js)
    odd = np.array([1.0, np.nan, np.inf, 4.0], dtype="f4")
    marked = np.array([192, 0, 0, 192], dtype=np.uint8)
    await publisher.publish(Frame(stream_id, 0, (Series("p", odd, 10**18, 10**8),)))
    await publisher.publish(
        Frame(stream_id, 1, (Series("p", odd, 2 * 10**18, 10**8, None, marked),))
    )
    await publisher.flush()

    async def one_stored() -> bool:
        return await frame_count(common.database_url, stream_id) == 1

    await eventually(one_stored, timeout=60)
    (letter,) = await dead_letters(bus, "ingest", 1)
    assert letter.field == "sensors[0].values" and "sample 1" in letter.reason


async def test_a_handler_exception_dead_letters_only_its_message(bus, stream_id: str) -> None:
    handled: list[int] = []

    async def handle(batch: list[Delivery[Frame]]) -> None:
        for d in batch:
            if d.item.seq == 3:
                raise ZeroDivisionError("the handler cannot take seq 3")
        handled.extend(d.item.seq for d in batch)

    stop = asyncio.Event()
    consumer = DurableConsumer(
        bus.js, service="probe", durable="probe-1", stream=subjects.SAMPLES.name,
        subject=subjects.stored("samples", stream_id), decode=decode_frame, handle=handle,
        metrics=Metrics("probe"), batch=10,
    )  # fmt: skip
    task = asyncio.create_task(consumer.run(stop))
    publisher = FramePublisher(bus.js)
    for seq in range(6):
        await publisher.publish(good_frame(stream_id, seq))
    await publisher.flush()
    letters = await dead_letters(bus, "probe", 1)
    await eventually(lambda: asyncio.sleep(0, sorted(handled) == [0, 1, 2, 4, 5]))
    assert letters[0].error_type == "ZeroDivisionError"
    assert "seq 3" in letters[0].reason
    assert letters[0].payload_inline
    stop.set()
    await task


@pytest.mark.timeout(180)
async def test_an_outage_longer_than_ack_wait_is_waited_out_without_a_dead_letter(
    bus, stream_id: str
) -> None:
    down = True
    calls = 0
    handled: list[int] = []

    async def handle(batch: list[Delivery[Frame]]) -> None:
        nonlocal calls
        calls += 1
        if down:
            raise TransientError("database unreachable")
        handled.extend(d.item.seq for d in batch)

    metrics = Metrics("probe")
    stop = asyncio.Event()
    consumer = DurableConsumer(
        bus.js, service="probe", durable="probe-2", stream=subjects.SAMPLES.name,
        subject=subjects.stored("samples", stream_id), decode=decode_frame, handle=handle,
        metrics=metrics, batch=10, ack_wait=2.0, nak_delay=0.2, max_retry_delay=1.0,
        max_deliver=2,
    )  # fmt: skip
    task = asyncio.create_task(consumer.run(stop))
    publisher = FramePublisher(bus.js)
    for seq in range(5):
        await publisher.publish(good_frame(stream_id, seq))
    await publisher.flush()
    await eventually(lambda: asyncio.sleep(0, calls >= 8), timeout=60)  # several ack_waits
    gauge = metrics.registry.get_sample_value(
        "vertac_dependency_down", {"service": "probe", "consumer": "probe-2"}
    )
    assert gauge == 1
    down = False
    await eventually(lambda: asyncio.sleep(0, sorted(handled) == [0, 1, 2, 3, 4]))
    info = await bus.js.consumer_info(subjects.SAMPLES.name, "probe-2")
    assert info.num_redelivered == 0  # kept alive: never redelivered, never counted
    assert handled == [0, 1, 2, 3, 4]
    stop.set()
    await task
    try:
        dlq = await bus.js.stream_info("VERTAC_DLQ")
        assert dlq.state.messages == 0
    except Exception as exc:  # pragma: no cover - the stream exists after bus init
        raise AssertionError("dead-letter stream missing") from exc


async def test_a_deleted_dead_letter_stream_is_created_again(bus, stream_id: str) -> None:
    await bus.js.delete_stream("VERTAC_DLQ")
    stop = asyncio.Event()

    async def handle(batch: list[Delivery[Frame]]) -> None:
        return None

    consumer = DurableConsumer(
        bus.js, service="probe", durable="probe-3", stream=subjects.SAMPLES.name,
        subject=subjects.stored("samples", stream_id), decode=decode_frame, handle=handle,
        metrics=Metrics("probe"),
    )  # fmt: skip
    task = asyncio.create_task(consumer.run(stop))
    await bus.js.publish(subjects.samples(stream_id), b"not a frame")

    async def recreated() -> bool:
        try:
            return (await bus.js.stream_info("VERTAC_DLQ")).state.messages == 1
        except Exception:
            return False

    await eventually(recreated)
    letters = await dead_letters(bus, "probe", 1)
    assert letters[0].subject.startswith(subjects.samples(stream_id) + ".")
    stop.set()
    await task


async def test_a_command_for_another_stream_on_this_subject_is_refused(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    running.start(serve_cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop))
    other = f"{stream_id}-b"
    cmd = CycleCommand(
        stream_id=other, command="cycle_start", source="test", issued_at=datetime.now(UTC)
    )
    await bus.js.publish(subjects.control(stream_id), cmd.model_dump_json().encode())
    letters = await dead_letters(bus, "cycles", 1)
    assert letters[0].field == "stream_id"
    assert "does not match subject" in letters[0].reason
    kv = await bus.js.key_value(subjects.KV_CYCLE_STATE)
    with pytest.raises(KeyNotFoundError):
        await kv.get(other)


@pytest.mark.timeout(300)
async def test_a_postgres_outage_longer_than_ack_wait_loses_and_dead_letters_nothing(
    bus, common: CommonSettings, running, stream_id: str, pg_cluster
) -> None:
    if pg_cluster.server is None:
        pytest.skip("stopping PostgreSQL needs the embedded server")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    publisher = FramePublisher(bus.js)
    for seq in range(50):
        await publisher.publish(good_frame(stream_id, seq))
    await publisher.flush()
    await eventually(lambda: _count_is(common, stream_id, 50), timeout=60)
    pg_cluster.server.stop()
    try:
        for seq in range(50, 400):
            await publisher.publish(good_frame(stream_id, seq))
        await publisher.flush()
        info = await bus.js.consumer_info(subjects.SAMPLES.name, IngestSettings().durable)
        deadline = asyncio.get_running_loop().time() + 40  # past the 30 s ack wait
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1)
    finally:
        pg_cluster.server.start()
    await eventually(lambda: _count_is(common, stream_id, 400), timeout=120)
    info = await bus.js.consumer_info(subjects.SAMPLES.name, IngestSettings().durable)
    assert info.num_ack_pending == 0
    dlq = await bus.js.stream_info("VERTAC_DLQ")
    assert dlq.state.messages == 0
    assert running.failures() == []


async def _count_is(common: CommonSettings, stream_id: str, n: int) -> bool:
    try:
        return await frame_count(common.database_url, stream_id) == n
    except Exception:
        return False


@pytest.mark.timeout(180)
async def test_the_simulator_rides_out_a_killed_nats_server_in_order(
    bus, nats_server, stream_id: str
) -> None:
    if isinstance(nats_server, str):
        pytest.skip("killing the bus needs the embedded nats-server")
    from edge.run import SimulateOptions, simulate
    from edge.simulator import build_machine
    from services.common.streams import read_frames

    model = build_machine(stream_id=stream_id, sensors=4, rate_hz=100)
    sent: list[int] = []
    publishing = asyncio.ensure_future(
        simulate(bus, model, SimulateOptions(speed=1, frames=60, frame_ms=100),
                 on_frame=lambda f: sent.append(f.seq))
    )  # fmt: skip
    await eventually(lambda: asyncio.sleep(0, len(sent) >= 15))
    nats_server.kill()
    await asyncio.sleep(2.0)
    await asyncio.to_thread(nats_server.start)
    result = await asyncio.wait_for(publishing, timeout=120)
    assert result.frames == 60
    stored = await read_frames(bus.nc, stream_id)
    assert [f.seq for f in stored] == sent  # each once, in the order published
    assert result.reordered == 0


async def test_a_guard_that_closes_holds_the_batch_in_order_and_redelivers_nothing(
    bus, stream_id: str
) -> None:  # type: ignore[no-untyped-def]
    """A partition whose lease is not confirmed for longer than ``ack_wait``: the fetched
    frames wait unhandled (neither given back again and again nor dead-lettered) and are
    handled, in order and once each, when the lease is confirmed again."""
    handled: list[int] = []
    open_at = asyncio.get_running_loop().time() + 4.0

    async def handle(batch: list[Delivery[Frame]]) -> None:
        handled.extend(d.item.seq for d in batch)

    stop = asyncio.Event()
    consumer = DurableConsumer(
        bus.js, service="probe", durable="probe-guard", stream=subjects.SAMPLES.name,
        subject=subjects.stored("samples", stream_id), decode=decode_frame, handle=handle,
        metrics=Metrics("probe"), batch=4, ack_wait=1.5, max_deliver=3,
        guard=lambda: asyncio.get_running_loop().time() >= open_at,
    )  # fmt: skip
    task = asyncio.create_task(consumer.run(stop))
    publisher = FramePublisher(bus.js)
    for seq in range(12):
        await publisher.publish(good_frame(stream_id, seq))
    await publisher.flush()
    await eventually(lambda: asyncio.sleep(0, len(handled) >= 12), timeout=60)
    await asyncio.sleep(2 * 1.5)  # anything given back or redelivered would show by now
    stop.set()
    await task
    first = {}
    for k, seq in enumerate(handled):
        first.setdefault(seq, k)
    assert sorted(first) == list(range(12))
    assert [first[s] for s in range(12)] == sorted(first[s] for s in range(12))  # in order
    info = await bus.js.stream_info("VERTAC_DLQ") if await _has_dlq(bus) else None
    assert info is None or info.state.messages == 0, "a held frame was dead-lettered"


async def _has_dlq(bus) -> bool:  # type: ignore[no-untyped-def]
    try:
        await bus.js.stream_info("VERTAC_DLQ")
    except Exception:
        return False
    return True
