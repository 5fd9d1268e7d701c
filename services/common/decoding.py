"""Decoders from bus messages to contracts, raising BadMessage with the offending field."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from schemas import subjects
from schemas.frames import Frame, FrameError, decode
from services.common.consumer import BadMessage

M = TypeVar("M", bound=BaseModel)


def decode_frame(msg: Msg) -> Frame:
    """Decode a samples message; its stream id must match the subject's."""
    try:
        frame = decode(msg.data, msg.headers)
    except FrameError as exc:
        raise BadMessage(exc.field, exc.reason) from exc
    try:
        subject_stream = subjects.stream_of(msg.subject)
    except ValueError as exc:
        raise BadMessage("subject", str(exc)) from exc
    if frame.stream_id != subject_stream:
        raise BadMessage(
            "stream_id", f"{frame.stream_id!r} does not match subject stream {subject_stream!r}"
        )
    return frame


def model_decoder(model: type[M]) -> Callable[[Msg], M]:
    """A decoder of JSON messages of ``model``."""

    def decode_model(msg: Msg) -> M:
        try:
            return model.model_validate_json(msg.data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BadMessage(".".join(str(p) for p in err["loc"]) or "body", err["msg"]) from exc

    return decode_model
