"""Records read from KV that another user may have written: a malformed one is logged and read
as the default, never raised into a request or a consumer."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from schemas import subjects
from schemas.messages import CycleConfig

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
