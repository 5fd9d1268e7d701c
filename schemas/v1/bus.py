"""Version 1 contracts: Dead letters: what a consumer could not use, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.v1.base import Contract


class DeadLetter(Contract):
    """A message a service could not process, on ``vertac.dlq.<service>``."""

    version: Literal[1] = 1
    service: str
    subject: str
    reason: str
    field: str = Field(default="", description="The offending field, when one is known.")
    error_type: str = Field(
        default="", description="Type of the failure (FrameError, ValueError, MaxDeliveries, ...)."
    )
    deliveries: int = 1
    stream: str = Field(default="", description="The JetStream stream the message came from.")
    stream_seq: int | None = Field(default=None, description="Sequence in the source stream.")
    headers: dict[str, str] = Field(default_factory=dict)
    payload_bytes: int = Field(default=0, description="Size of the original payload.")
    payload_inline: bool = Field(
        default=True,
        description="False when the payload was too large to copy: read it from `stream` at "
        "`stream_seq` (while the stream's retention keeps it).",
    )
    payload_b64: str = Field(
        default="", description="The original payload, base64 (empty when not inline)."
    )
    at: datetime
