"""Publishing frames to JetStream with de-duplication ids, and a bounded window of acks."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Literal

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from schemas import subjects
from schemas.frames import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_JSON,
    Frame,
    encode_binary,
    to_json_model,
)

log = logging.getLogger(__name__)
Encoding = Literal["binary", "json"]


def frame_message(frame: Frame, encoding: Encoding = "binary") -> tuple[str, bytes, dict[str, str]]:
    """Subject, payload and headers of ``frame``."""
    if encoding == "binary":
        payload, content_type = encode_binary(frame), CONTENT_TYPE_BINARY
    else:
        payload, content_type = to_json_model(frame).model_dump_json().encode(), CONTENT_TYPE_JSON
    headers = {
        subjects.HEADER_CONTENT_TYPE: content_type,
        subjects.HEADER_MSG_ID: subjects.dedup_id(frame.stream_id, frame.seq),
    }
    return subjects.samples(frame.stream_id), payload, headers


class FramePublisher:
    """Publishes frames with up to ``window`` acknowledgements outstanding.

    A frame whose publish fails is published again with the same ``Nats-Msg-Id``, so JetStream
    stores it once. ``flush()`` waits until every frame is acknowledged.
    """

    def __init__(self, js: JetStreamContext, *, window: int = 256, encoding: Encoding = "binary",
                 retry_delay: float = 0.5) -> None:  # fmt: skip
        self.js = js
        self.window = window
        self.encoding = encoding
        self.retry_delay = retry_delay
        self._pending: deque[tuple[asyncio.Task[PubAck], Frame]] = deque()
        self.published = 0
        self.duplicates = 0
        self.retries = 0

    async def publish(self, frame: Frame) -> None:
        while len(self._pending) >= self.window:
            await self._settle_oldest()
        self._pending.append((asyncio.create_task(self._send(frame)), frame))

    async def _send(self, frame: Frame) -> PubAck:
        subject, payload, headers = frame_message(frame, self.encoding)
        while True:
            try:
                return await self.js.publish(subject, payload, headers=headers, timeout=5)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError,
                    nats.errors.ConnectionReconnectingError) as exc:  # fmt: skip
                self.retries += 1
                log.warning(
                    "publish failed, retrying", extra={"seq": frame.seq, "error": repr(exc)}
                )
                await asyncio.sleep(self.retry_delay)

    async def _settle_oldest(self) -> None:
        task, _ = self._pending.popleft()
        ack = await task
        self.published += 1
        if ack.duplicate:
            self.duplicates += 1

    async def flush(self) -> None:
        while self._pending:
            await self._settle_oldest()
