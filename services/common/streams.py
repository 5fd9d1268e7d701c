"""Stream registry and per-stream sequence numbers, both kept in JetStream KV, and reading a
stream's frames back from JetStream.

The registry record is the source of truth (``vertac_streams``); ingest mirrors it into
PostgreSQL's ``live_streams``. Sequence numbers come from ``vertac_seq`` with compare-and-set, so
every publisher of a stream (edge, REST gateway replicas) draws from one monotonic counter.
"""

from __future__ import annotations

from dataclasses import replace
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
    site = subjects.site_of(stream_id)  # at central, a site's stream is in the site's stream
    stream, subject = (
        (subjects.SAMPLES.name, subjects.stored("samples", stream_id))
        if site is None
        else (subjects.site_stream(site[0]), subjects.site_data(site[0], "samples", site[1]))
    )
    async for msg in directget.messages(
        nc,
        stream,
        subject,
        from_seq=from_seq,
        since=since,
        to_seq=to_seq,
        limit=limit,
    ):
        try:
            frame = decode(msg.data, msg.headers)
        except FrameError:
            continue
        frames.append(frame if site is None else replace(frame, stream_id=stream_id))
    return frames
