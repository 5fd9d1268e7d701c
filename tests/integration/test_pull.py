"""How a durable consumer pulls and acknowledges, against a real nats-server: requests kept
outstanding deliver every message once and in order; under AckPolicy.ALL one acknowledgement
settles a batch, dead letters included; a durable keeps the policy it was made with; a consumer
that stops gives back what it was sent, so the next holder has it at once and in order."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from edge.publisher import FramePublisher
from schemas import subjects
from schemas.frames import Frame, Series
from services.common.consumer import Delivery, DurableConsumer
from services.common.decoding import decode_frame
from services.common.metrics import Metrics
from services.common.pull import Puller
from tests.conftest import eventually
from tests.helpers import dead_letters

pytestmark = pytest.mark.integration


def frame(stream_id: str, seq: int) -> Frame:
    return Frame(stream_id, seq, (Series("p", np.arange(10, dtype="f8"), seq * 10**9, 10**8),))


def consumer(bus, stream_id: str, durable: str, handle, **policy) -> DurableConsumer[Frame]:  # type: ignore[no-untyped-def]
    return DurableConsumer(
        bus.js, service="probe", durable=durable, stream=subjects.SAMPLES.name,
        subject=subjects.stored("samples", stream_id), decode=decode_frame, handle=handle,
        metrics=Metrics("probe"), **policy,
    )  # fmt: skip


async def publish(bus, stream_id: str, seqs: range) -> None:  # type: ignore[no-untyped-def]
    publisher = FramePublisher(bus.js)
    for seq in seqs:
        await publisher.publish(frame(stream_id, seq))
    await publisher.flush()


async def test_one_acknowledgement_settles_a_batch_dead_letters_included(
    bus, stream_id: str
) -> None:  # type: ignore[no-untyped-def]
    handled: list[int] = []
    batches: list[int] = []

    async def handle(batch: list[Delivery[Frame]]) -> None:
        batches.append(len(batch))
        handled.extend(d.item.seq for d in batch)

    stop = asyncio.Event()
    c = consumer(bus, stream_id, "probe-all", handle, batch=64, ack_policy=AckPolicy.ALL)
    task = asyncio.create_task(c.run(stop))
    await publish(bus, stream_id, range(0, 100))
    await bus.js.publish(subjects.samples(stream_id), b"not a frame")  # last of its batch
    await publish(bus, stream_id, range(100, 200))
    letters = await dead_letters(bus, "probe", 1)
    await eventually(lambda: asyncio.sleep(0, len(handled) >= 200))
    info = await bus.js.consumer_info(subjects.SAMPLES.name, "probe-all")

    async def settled() -> bool:
        nonlocal info
        info = await bus.js.consumer_info(subjects.SAMPLES.name, "probe-all")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled)
    stop.set()
    await task
    assert handled == list(range(200))  # each once, in order
    assert c.ack_policy == AckPolicy.ALL
    assert AckPolicy(info.config.ack_policy) == AckPolicy.ALL
    assert info.num_redelivered == 0
    assert info.ack_floor.stream_seq == info.delivered.stream_seq  # all 201 settled
    assert letters[0].error_type == "BadMessage" and letters[0].field
    assert max(batches) > 1  # whatever had arrived was handled together


async def test_a_durable_keeps_the_ack_policy_it_was_made_with(bus, stream_id: str) -> None:
    await bus.js.add_consumer(
        subjects.SAMPLES.name,
        config=ConsumerConfig(
            durable_name="probe-old", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, filter_subject=subjects.stored("samples", stream_id),
        ),
    )  # fmt: skip
    handled: list[int] = []

    async def handle(batch: list[Delivery[Frame]]) -> None:
        handled.extend(d.item.seq for d in batch)

    stop = asyncio.Event()
    c = consumer(bus, stream_id, "probe-old", handle, batch=16, ack_policy=AckPolicy.ALL)
    task = asyncio.create_task(c.run(stop))
    await publish(bus, stream_id, range(40))
    await eventually(lambda: asyncio.sleep(0, len(handled) >= 40))

    async def settled() -> bool:
        info = await bus.js.consumer_info(subjects.SAMPLES.name, "probe-old")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled)
    stop.set()
    await task
    assert c.ack_policy == AckPolicy.EXPLICIT  # read back: acknowledged one by one
    assert handled == list(range(40))


@pytest.mark.timeout(120)
async def test_a_closing_puller_gives_back_what_it_was_sent_for_the_next_holder(
    bus, stream_id: str
) -> None:  # type: ignore[no-untyped-def]
    await publish(bus, stream_id, range(60))
    # ack_wait of 60 s: anything not given back would reach the next holder only after that
    await bus.js.add_consumer(
        subjects.SAMPLES.name,
        config=ConsumerConfig(
            durable_name="probe-move", ack_policy=AckPolicy.EXPLICIT, ack_wait=60,
            deliver_policy=DeliverPolicy.ALL, filter_subject=subjects.stored("samples", stream_id),
        ),
    )  # fmt: skip
    puller = Puller(bus.nc, bus.js._prefix, subjects.SAMPLES.name, "probe-move", batch=20,
                    expires_s=2.0)  # fmt: skip
    await puller.open()
    taken = await puller.next_batch(5, 10.0)
    first = [decode_frame(m).seq for m in taken]
    for m in taken:
        await m.ack()
    await eventually(lambda: asyncio.sleep(0, len(puller.queued()) > 0))  # sent behind them
    await puller.close()
    assert not puller.requests

    async def dropped() -> bool:  # JetStream forgets the requests of an inbox left
        info = await bus.js.consumer_info(subjects.SAMPLES.name, "probe-move")
        return info.num_waiting == 0

    await eventually(dropped)
    started = asyncio.get_running_loop().time()
    second: list[int] = []

    async def handle(batch: list[Delivery[Frame]]) -> None:
        second.extend(d.item.seq for d in batch)

    stop = asyncio.Event()
    c = consumer(bus, stream_id, "probe-move", handle, batch=8)
    task = asyncio.create_task(c.run(stop))
    await eventually(lambda: asyncio.sleep(0, len(first) + len(second) >= 60), timeout=30)
    took = asyncio.get_running_loop().time() - started
    stop.set()
    await task
    assert first == list(range(len(first)))
    assert first + second == list(range(60))  # nothing lost, nothing twice, in order
    assert took < 30  # given back at once, not waited out


@pytest.mark.parametrize(("probe_every_s", "expected"), [(60.0, 1), (0.0, None)])
async def test_an_idle_consumer_asks_about_its_stream_once_per_probe_period(
    bus, stream_id: str, probe_every_s: float, expected: int | None
) -> None:  # type: ignore[no-untyped-def]
    async def handle(batch: list[Delivery[Frame]]) -> None:
        return None

    c = consumer(bus, stream_id, f"probe-idle-{int(probe_every_s)}", handle, fetch_timeout=0.2,
                 probe_every_s=probe_every_s)  # fmt: skip
    timeouts = 0
    asked = 0  # consumer_info calls made by the probes
    in_probe = False
    probe, info = c._probe, c.info

    async def counting_probe() -> None:
        nonlocal timeouts, in_probe
        timeouts += 1
        in_probe = True
        try:
            await probe()
        finally:
            in_probe = False

    async def counting_info():  # type: ignore[no-untyped-def]
        nonlocal asked
        asked += in_probe
        return await info()

    async def no_lag_watch(stop: asyncio.Event) -> None:
        await stop.wait()  # its consumer_info calls are not the probes'

    c._probe = counting_probe  # type: ignore[method-assign]
    c.info = counting_info  # type: ignore[method-assign]
    c._watch_lag = no_lag_watch  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await eventually(lambda: asyncio.sleep(0, timeouts >= 6), timeout=30)
    stop.set()
    await task
    assert c.backlog == 0 and c.seeing_since_ns is not None  # it knows the stream is empty
    assert asked == (expected if expected is not None else timeouts)
