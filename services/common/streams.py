"""Stream registry and per-stream sequence numbers, both kept in JetStream KV, and reading a
stream's frames back from JetStream.

The registry record is the source of truth (``vertac_streams``); ingest mirrors it into
PostgreSQL's ``live_streams``. Sequence numbers come from ``vertac_seq`` with compare-and-set, so
every publisher of a stream (edge, REST gateway replicas) draws from one monotonic counter.
"""

from __future__ import annotations

from datetime import datetime

from nats.aio.client import Client

from schemas import subjects
from schemas.frames import Frame, FrameError, decode
from services.common import directget


async def read_frames(
    nc: Client,
    stream_id: str,
    *,
    from_seq: int = 1,
    since: datetime | None = None,
    to_seq: int | None = None,
    limit: int | None = None,
) -> list[Frame]:
    """A stream's frames as JetStream holds them, oldest first: from stream sequence
    ``from_seq``, or stored since ``since``; up to ``to_seq`` (included) and at most ``limit``.
    Read with direct gets, which leave no consumer behind; frames that do not decode are
    skipped (ingest dead-letters them)."""
    frames: list[Frame] = []
    async for msg in directget.messages(
        nc,
        subjects.SAMPLES.name,
        subjects.stored("samples", stream_id),
        from_seq=from_seq,
        since=since,
        to_seq=to_seq,
        limit=limit,
    ):
        try:
            frames.append(decode(msg.data, msg.headers))
        except FrameError:
            continue
    return frames
