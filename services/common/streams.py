"""Stream registry and per-stream sequence numbers, both kept in JetStream KV, and reading a
stream's frames back from JetStream.

The registry record is the source of truth (``vertac_streams``); ingest mirrors it into
PostgreSQL's ``live_streams``. Sequence numbers come from ``vertac_seq`` with compare-and-set, so
every publisher of a stream (edge, REST gateway replicas) draws from one monotonic counter.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.frames import Frame, FrameError, decode
from schemas.messages import StreamRegistered, StreamRegistration


async def reserve_seq(kv: KeyValue, stream_id: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive sequence numbers of ``stream_id``; returns the first."""
    if count < 1:
        raise ValueError("count must be >= 1")
    for attempt in range(100):
        try:
            entry = await kv.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            try:
                await kv.create(stream_id, str(count).encode())
            except KeyWrongLastSequenceError:
                continue
            return 0
        current = int(entry.value or b"0")
        try:
            await kv.update(stream_id, str(current + count).encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(0.001 * attempt)
            continue
        return current
    raise RuntimeError(f"could not reserve a sequence number for {stream_id}: too much contention")


async def release_seq(kv: KeyValue, stream_id: str, reserved_end: int, next_seq: int) -> bool:
    """Give back the unused tail ``next_seq..reserved_end`` of a reservation, if nobody reserved
    after it, so a cleanly stopped publisher leaves no gap in ``seq``. Returns True if released."""
    if next_seq >= reserved_end:
        return False
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return False
    if int(entry.value or b"0") != reserved_end:
        return False
    try:
        await kv.update(stream_id, str(next_seq).encode(), last=entry.revision)
    except KeyWrongLastSequenceError:
        return False
    return True


async def lookup(kv: KeyValue, stream_id: str) -> StreamRegistered | None:
    """The registration of ``stream_id``, or None."""
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    return StreamRegistered.model_validate_json(entry.value)


def derive_stream_id(device_name: str) -> str:
    """A stream id made from a device name: 'Press 1 / Line A' -> 'press-1-line-a'."""
    cleaned = "".join(c.lower() if c.isascii() and c.isalnum() else "-" for c in device_name)
    token = "-".join(part for part in cleaned.split("-") if part)[:64]
    return subjects.check_stream_id(token or "stream")


async def register(
    js: JetStreamContext, kv: KeyValue, registration: StreamRegistration
) -> tuple[StreamRegistered, bool]:
    """Store and announce a registration; returns it and whether the stream existed before."""
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    before = await lookup(kv, stream_id)
    existed = before is not None
    dataset_id = registration.dataset_id or (before.dataset_id if before else "")
    record = StreamRegistered(
        stream_id=stream_id,
        device_name=registration.device_name,
        description=registration.description,
        sensors=registration.sensors,
        registered_at=datetime.now(UTC),
        dataset_id=dataset_id or f"live-{stream_id}"[:64],
    )
    body = record.model_dump_json().encode()
    await kv.put(stream_id, body)
    await js.publish(
        subjects.registry(stream_id),
        body,
        headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
    )
    return record, existed


async def read_frames(
    js: JetStreamContext,
    stream_id: str,
    *,
    from_seq: int = 1,
    since: datetime | None = None,
    to_seq: int | None = None,
    limit: int | None = None,
) -> list[Frame]:
    """A stream's frames as JetStream holds them, oldest first: from stream sequence
    ``from_seq``, or stored since ``since``; up to ``to_seq`` (included) and at most ``limit``.
    Read with a short-lived consumer that stops when nothing is pending; frames that do not
    decode are skipped (ingest dead-letters them)."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, from_seq),
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        filter_subject=subjects.stored("samples", stream_id),
        mem_storage=True,
    )
    if since is not None:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_TIME, None
        config.opt_start_time = since
    sub = await js.pull_subscribe(
        subjects.stored("samples", stream_id), stream=subjects.SAMPLES.name, config=config
    )
    room = limit if limit is not None else 1 << 62
    frames: list[Frame] = []
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0 and len(frames) < room:
            try:
                msgs = await sub.fetch(min(512, pending, room - len(frames)), timeout=5.0)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in msgs:
                if to_seq is not None and msg.metadata.sequence.stream > to_seq:
                    return frames
                pending = msg.metadata.num_pending
                try:
                    frames.append(decode(msg.data, msg.headers))
                except FrameError:
                    continue
    finally:
        await sub.unsubscribe()
    return frames
