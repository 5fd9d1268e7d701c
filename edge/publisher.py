"""Publishing frames to JetStream with de-duplication ids, and a bounded window of acks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Literal

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from edge.client import describe, is_transient
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
        payload, content_type = encode_binary(frame, shuffled=True), CONTENT_TYPE_BINARY
    else:
        payload, content_type = to_json_model(frame).model_dump_json().encode(), CONTENT_TYPE_JSON
    headers = {
        subjects.HEADER_CONTENT_TYPE: content_type,
        subjects.HEADER_MSG_ID: subjects.dedup_id(frame.stream_id, frame.seq),
    }
    return subjects.samples(frame.stream_id), payload, headers


class FramePublisher:
    """Publishes frames with up to ``window`` acknowledgements outstanding, through outages.

    A frame is only handed to the connection while it is connected, so nothing piles up in the
    client's reconnect buffer, and no new frame goes out while the oldest has waited more than
    ``stall_s`` for its ack. When a publish fails for a transient reason (no answer, no stream
    leader, connection lost) the window is drained and the frames that failed are published
    again one at a time, oldest first, until each is acknowledged: with the same ``Nats-Msg-Id``,
    so JetStream stores each once. ``reordered`` counts frames stored after a later frame of the
    same window (consumers order by ``seq``). Only what can never succeed (a frame above the
    server's payload limit) is raised. Memory stays bounded by ``window``. A healthy JetStream
    acknowledges in milliseconds, so ``timeout`` is short: a frame sent into a dying stream leader
    is sent again within about two seconds, well inside a cycle's default gap timeout (5 s).
    """

    def __init__(self, js: JetStreamContext, *, window: int = 256, encoding: Encoding = "binary",
                 retry_delay: float = 0.2, max_retry_delay: float = 2.0,
                 timeout: float = 2.0, stall_s: float = 0.25) -> None:  # fmt: skip
        self.js = js
        self.window = window
        self.encoding = encoding
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout
        self._pending: deque[tuple[asyncio.Task[PubAck | Exception], Frame]] = deque()
        self._sent_at: deque[float] = deque()
        self.stall_s = stall_s
        self.published = 0
        self.duplicates = 0
        self.retries = 0
        self.reordered = 0

    async def publish(self, frame: Frame) -> None:
        while self._pending and (
            len(self._pending) >= self.window or self._pending[0][0].done() or self._stalled()
        ):
            await self._settle_oldest()  # a failure found here stops sending until it is stored
        await self._connected()
        self._pending.append((asyncio.create_task(self._attempt(frame)), frame))
        self._sent_at.append(time.monotonic())

    def _stalled(self) -> bool:
        """The oldest frame waits for its ack longer than any healthy bus takes: send nothing
        more until it settles, so frames sent into a leader election cannot overtake it."""
        return not self._pending[0][0].done() and (
            time.monotonic() - self._sent_at[0] > self.stall_s
        )

    async def flush(self) -> None:
        while self._pending:
            await self._settle_oldest()

    async def _attempt(self, frame: Frame) -> PubAck | Exception:
        subject, payload, headers = frame_message(frame, self.encoding)
        try:
            return await self.js.publish(subject, payload, headers=headers, timeout=self.timeout)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return exc

    async def _settle_oldest(self) -> None:
        task, frame = self._pending.popleft()
        self._sent_at.popleft()
        result = await task
        if not isinstance(result, Exception):
            self._count(result)
            return
        failed = [(frame, result)]
        while self._pending:  # drain the window: which of the later frames made it?
            task, later = self._pending.popleft()
            self._sent_at.popleft()
            outcome = await task
            if isinstance(outcome, Exception):
                failed.append((later, outcome))
            else:
                self._count(outcome)
                self.reordered += 1 if failed else 0
        for f, exc in failed:
            await self._until_acked(f, exc)

    async def _until_acked(self, frame: Frame, first: Exception) -> None:
        delay, exc = self.retry_delay, first
        while True:
            self.retries += 1
            log.warning(
                "publish failed, retrying", extra={"seq": frame.seq, "error": describe(exc)}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
            await self._connected()
            result = await self._attempt(frame)
            if not isinstance(result, Exception):
                self._count(result)
                return
            exc = result

    async def _connected(self) -> None:
        nc = getattr(self.js, "_nc", None)
        if nc is None:
            return
        while not nc.is_connected:
            if nc.is_closed:
                raise nats.errors.ConnectionClosedError
            await asyncio.sleep(0.05)

    def _count(self, ack: PubAck) -> None:
        self.published += 1
        if ack.duplicate:
            self.duplicates += 1
