"""Records read from KV or a stream that another user may have written: a malformed one is
logged and read as the default, never raised into a request or a consumer."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from pydantic import ValidationError

from schemas import subjects
from schemas.messages import CycleConfig, CycleStateChanged
from services.common import directget

log = logging.getLogger(__name__)


def config_or_default(stream_id: str, value: bytes | None) -> CycleConfig:
    """The stream's cycle configuration; manual triggering (the default) when the stored
    record is not a valid one, with a log line naming the key."""
    try:
        return CycleConfig.model_validate_json(value or b"{}")
    except ValidationError as exc:
        log.warning(
            "skipping a malformed cycle configuration, using manual triggering",
            extra={
                "bucket": subjects.KV_CYCLE_CONFIG,
                "key": stream_id,
                "reason": exc.errors()[0].get("msg", ""),
            },
        )
        return CycleConfig()


async def current_cycle(nc: Client, stream_id: str) -> CycleStateChanged | None:
    """The stream's newest cycle event, read from the cycles service's events (a direct get:
    nothing is left on the server), or None when it has none (or a malformed one, logged).
    ``state == "running"``: a cycle is under way, since ``started_ns``."""
    stored = await directget.last_message(nc, subjects.CYCLES.name, subjects.cycles_of(stream_id))
    if stored is None:
        return None
    try:
        return CycleStateChanged.model_validate_json(stored.data)
    except ValidationError as exc:
        log.warning(
            "malformed cycle event ignored",
            extra={"subject": stored.subject, "seq": stored.seq, "error": str(exc)[:200]},
        )
        return None
