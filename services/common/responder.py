"""Request-reply on core NATS, answered the one way every responder answers: a JSON body and
its HTTP-like status in the header ``Vertac-Status``.

A responder names the operations it serves (the subject's last token), each with the model its
body must validate against. A body that does not validate is answered 422 with the fields; a
:class:`RequestError` with its status, message and field; any other failure 503 (the cause is
logged): a request always gets an answer, and the caller decides whether to retry.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from schemas import subjects
from schemas.messages import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)
STATUS_HEADER = subjects.HEADER_STATUS

Operation = tuple[type[BaseModel], Callable[[Any], Awaitable[Any]]]
StreamOperation = tuple[type[BaseModel], Callable[[str, Any], Awaitable[Any]]]
Handle = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]


class RequestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP-like code."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def error_body(message: str, field: str = "") -> bytes:
    details = [ErrorDetail(field=field, message=message)] if field else []
    return ErrorBody(error=message, details=details).model_dump_json().encode()


def _encoded(answer: Any) -> bytes:
    if isinstance(answer, bytes):
        return answer
    if isinstance(answer, dict):
        return json.dumps(answer).encode()
    if isinstance(answer, list):
        return ("[" + ",".join(a.model_dump_json() for a in answer) + "]").encode()
    return bytes(answer.model_dump_json().encode())


async def answer(
    ops: Mapping[str, Operation], op: str, data: bytes, what: str
) -> tuple[int, bytes]:
    """Serve one request of operation ``op``: (status, JSON body)."""
    if op not in ops:
        return 404, error_body(f"unknown {what} operation {op!r}; one of {', '.join(ops)}")
    model, serve = ops[op]
    try:
        request = model.model_validate_json(data)
        return 200, _encoded(await serve(request))
    except ValidationError as exc:
        details = [
            ErrorDetail(field=".".join(str(p) for p in e["loc"]), message=e["msg"])
            for e in exc.errors()
        ]
        return 422, ErrorBody(
            error="request is not valid", details=details
        ).model_dump_json().encode()
    except RequestError as exc:
        return exc.status, error_body(exc.message, exc.field)


def per_stream(ops: Mapping[str, StreamOperation], what: str) -> Handle:
    """A handler of ``vertac.<kind>.<stream_id>.<op>`` requests: an invalid stream id is
    answered 400, then ``ops[op]`` is served as :func:`answer` serves it, with the stream id
    as its first argument."""

    async def handle(stream_id: str, op: str, data: bytes) -> tuple[int, bytes]:
        try:
            subjects.check_stream_id(stream_id)
        except subjects.InvalidStreamId as exc:
            return 400, error_body(str(exc), "stream_id")
        bound: dict[str, Operation] = {
            name: (model, functools.partial(serve, stream_id))
            for name, (model, serve) in ops.items()
        }
        return await answer(bound, op, data, what)

    return handle


async def respond(
    nc: Client,
    subject: str,
    queue: str,
    handle: Handle,
    what: str,
) -> Subscription:
    """Answer requests on ``subject`` (``vertac.<kind>.<stream_id>.<op>``, one member of queue
    group ``queue``): ``handle(stream_id, op, data)`` gives the status and body; a failure it
    lets through is answered 503."""

    async def on_request(msg: Msg) -> None:
        _, _, stream_id, op = msg.subject.split(".", 3)
        try:
            status, body = await handle(stream_id, op, msg.data)
        except Exception as exc:  # a request must always get an answer; the cause is logged
            log.exception(f"{what} request failed", extra={"subject": msg.subject})
            status, body = 503, error_body(f"the {queue} service could not answer: {exc}")
        if msg.reply:
            await nc.publish(msg.reply, body, headers={STATUS_HEADER: str(status)})

    return await nc.subscribe(subject, queue=queue, cb=on_request)
