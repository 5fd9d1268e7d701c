"""Stream registry and per-stream sequence numbers, both kept in JetStream KV, and reading a
stream's frames back from JetStream.

The registry record is the source of truth (``vertac_streams``); ingest mirrors it into
PostgreSQL's ``live_streams``. Sequence numbers come from ``vertac_seq`` with compare-and-set, so
every publisher of a stream (edge, REST gateway replicas) draws from one monotonic counter.
"""

from __future__ import annotations

from datetime import datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas import subjects
from schemas.frames import Frame, FrameError, decode


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
