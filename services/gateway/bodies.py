"""JSON request bodies of some size are parsed and validated on a worker thread, so one large
batch does not hold up every other request and WebSocket of the process meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

THREAD_FROM_BYTES = 256 * 1024  # below this, parsing takes less than a thread hand-off


class OffLoopJson(APIRoute):
    """An APIRoute that, for a JSON body of :data:`THREAD_FROM_BYTES` or more, parses it with
    ``json.loads`` and validates it against the route's body model on a thread.

    FastAPI then finds the body already read (``request.json()`` is cached) and already
    validated: pydantic passes a model instance through without validating it again. An invalid
    body is answered here with the same 422 FastAPI gives (JSON errors with their position,
    model errors with their field), without touching the event loop for the work."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # one body model, not embedded: FastAPI validates the whole body against it
        field = self.body_field if not self._embed_body_fields else None

        def parse(body: bytes) -> tuple[Any, list[Any]]:
            try:
                data = json.loads(body)
            except json.JSONDecodeError as e:  # what FastAPI says of invalid JSON
                return None, [
                    {
                        "type": "json_invalid",
                        "loc": ("body", e.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": e.msg},
                    }
                ]
            except ValueError:  # not UTF-8 and the like: left to FastAPI's own answer
                return None, []
            if field is None:
                return data, []
            value, errors = field.validate(data, {}, loc=("body",))
            return value, errors

        async def handle(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH") and "json" in request.headers.get(
                "content-type", ""
            ):
                body = await request.body()
                if len(body) >= THREAD_FROM_BYTES:
                    value, errors = await asyncio.to_thread(parse, body)
                    if errors:
                        raise RequestValidationError(errors)
                    if value is not None:
                        request._json = value
            return await handler(request)

        return handle
