"""Decoders from bus messages to contracts, raising BadMessage with the offending field."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from schemas import subjects
from schemas.frames import Frame, FrameError, decode
from services.common.failures import BadMessage

M = TypeVar("M", bound=BaseModel)


def decode_frame(msg: Msg) -> Frame:
    """Decode a samples message; its stream id must match the subject's."""
    try:
        frame = decode(msg.data, msg.headers)
    except FrameError as exc:
        raise BadMessage(exc.field, exc.reason) from exc
    _same_stream(msg, frame.stream_id)
    return frame


SensorsOf = Callable[[str], Container[str] | None]


def frame_decoder(sensors_of: SensorsOf, *, finite: bool = False) -> Callable[[Msg], Frame]:
    """A decoder of samples messages that builds the arrays of the sensors
    ``sensors_of(stream_id)`` names only (all of them for None): every sensor is checked all the
    same, and the frame can still be completed (:meth:`Frame.complete`). With ``finite`` (what
    stores frames), NaN or infinity of good quality is refused as well."""

    def decode_some(msg: Msg) -> Frame:
        try:
            wanted = sensors_of(subjects.stream_of(msg.subject))
        except ValueError as exc:
            raise BadMessage("subject", str(exc)) from exc
        try:
            frame = decode(msg.data, msg.headers, wanted, finite=finite)
        except FrameError as exc:
            raise BadMessage(exc.field, exc.reason) from exc
        _same_stream(msg, frame.stream_id)
        return frame

    return decode_some


def _same_stream(msg: Msg, stream_id: str) -> None:
    """A message naming one stream on another stream's subject is refused (it would act on a
    stream its publisher may not be allowed to touch)."""
    try:
        subject_stream = subjects.stream_of(msg.subject)
    except ValueError as exc:
        raise BadMessage("subject", str(exc)) from exc
    if stream_id != subject_stream:
        raise BadMessage(
            "stream_id", f"{stream_id!r} does not match subject stream {subject_stream!r}"
        )


def model_decoder(model: type[M]) -> Callable[[Msg], M]:
    """A decoder of JSON messages of ``model``; a ``stream_id`` must match the subject's."""

    def decode_model(msg: Msg) -> M:
        try:
            item = model.model_validate_json(msg.data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BadMessage(".".join(str(p) for p in err["loc"]) or "body", err["msg"]) from exc
        stream_id = getattr(item, "stream_id", None)
        if isinstance(stream_id, str):
            _same_stream(msg, stream_id)
        return item

    return decode_model
