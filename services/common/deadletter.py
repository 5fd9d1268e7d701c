"""Dead letters: the record of a message no service could process (the reason, the field, the
payload inline or, above :data:`INLINE_PAYLOAD_LIMIT`, by reference to its source stream and
sequence), publishing it until it is stored, and the dead-letter stream as a consumer makes it
again when it was deleted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from datetime import UTC, datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from edge.client import MAX_REASON_CHARS, describe
from schemas import subjects
from schemas.messages import DeadLetter

INLINE_PAYLOAD_LIMIT: Final = 256 * 1024
MAX_HEADER_CHARS: Final = 1024
log = logging.getLogger(__name__)


def dead_letter_for(
    service: str, msg: Msg, reason: str, field: str = "", error_type: str = ""
) -> DeadLetter:
    """The dead-letter record of ``msg``; a large payload is kept by reference, not inline."""
    deliveries, stream_seq, stream = delivery_metadata(msg)
    inline = len(msg.data) <= INLINE_PAYLOAD_LIMIT
    return DeadLetter(
        service=service,
        subject=msg.subject[:MAX_HEADER_CHARS],
        reason=reason[:MAX_REASON_CHARS],
        field=field[:MAX_HEADER_CHARS],
        error_type=error_type,
        deliveries=deliveries,
        stream=stream,
        stream_seq=stream_seq,
        headers={
            k[:MAX_HEADER_CHARS]: str(v)[:MAX_HEADER_CHARS]
            for k, v in list((msg.headers or {}).items())[:32]
        },
        payload_bytes=len(msg.data),
        payload_inline=inline,
        payload_b64=base64.b64encode(msg.data).decode() if inline else "",
        at=datetime.now(UTC),
    )


def delivery_metadata(msg: Msg) -> tuple[int, int | None, str]:
    try:
        meta = msg.metadata
    except (nats.errors.NotJSMessageError, ValueError, IndexError):
        return 1, None, ""
    return meta.num_delivered, meta.sequence.stream, meta.stream


def dead_letter_stream_config() -> StreamConfig:
    """The dead-letter stream as a consumer recreates it when it was deleted; ``vertac bus
    init`` (run by every service at start) sets its configured limits again."""
    js_stream = subjects.DEAD_LETTER
    return StreamConfig(
        name=js_stream.name,
        description="Messages no service could process, with the reason",
        subjects=list(js_stream.subjects),
        max_age=30 * 86400,
        max_bytes=1024**3,
        max_msg_size=8 * 1024 * 1024,
    )


async def publish_dead_letter(
    js: JetStreamContext, record: DeadLetter, stop: asyncio.Event, max_retry_delay: float
) -> bool:
    """Publish ``record`` to ``vertac.dlq.<service>``, retrying (and making the dead-letter
    stream again when it was deleted) until it is stored; False when ``stop`` was set first."""
    body = record.model_dump_json().encode()
    delay = 0.5
    while True:
        try:
            await js.publish(
                subjects.dead_letter(record.service),
                body,
                headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
            )
            return True
        except (
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.NotFoundError,
        ):
            log.warning("dead-letter stream missing: creating it again")
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.add_stream(dead_letter_stream_config())
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("dead letter not published, retrying", extra={"error": describe(exc)})
        if stop.is_set():
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_delay)
