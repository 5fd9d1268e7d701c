"""Request bodies: the caller is authenticated before a body is read, and JSON bodies are
parsed here with a bound on their nesting; those of some size are parsed and validated on a
worker thread, so one large batch does not hold up every other request and WebSocket of the
process meanwhile."""

from __future__ import annotations

import asyncio
import email.message
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

THREAD_FROM_BYTES = 256 * 1024  # below this, parsing takes less than a thread hand-off
MAX_DEPTH = 32  # nesting of arrays and objects; no contract needs more than a few levels
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this content type as JSON: ``application/json`` or
    ``application/*+json``, in any case and with any parameters (none given: not JSON, as
    FastAPI's strict content type has it)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def depth_of(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings not counted)."""
    text = np.frombuffer(_STRING.sub(b'""', body), dtype=np.uint8)
    steps = np.zeros(len(text), dtype=np.int32)
    steps[(text == ord("[")) | (text == ord("{"))] = 1
    steps[(text == ord("]")) | (text == ord("}"))] = -1
    return int(steps.cumsum().max(initial=0))


def _needs_sign_in(dependant: Dependant) -> bool:
    from services.gateway.auth import current

    return any(d.call is current or _needs_sign_in(d) for d in dependant.dependencies)


def _json_error(kind: str, where: int | str, msg: str, error: str) -> list[dict[str, Any]]:
    return [
        {"type": kind, "loc": ("body", where), "msg": msg, "input": {}, "ctx": {"error": error}}
    ]


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

        sign_in_first = _needs_sign_in(self.dependant)
        # FastAPI parses a JSON body only for a route with a body model that is not a form
        takes_json = self.body_field is not None and not isinstance(
            self.body_field.field_info, params.Form
        )

        def parse(body: bytes, validate: bool) -> tuple[Any, list[Any]]:
            depth = depth_of(body)
            if depth > MAX_DEPTH:
                return None, _json_error(
                    "json_invalid", 0, "JSON nested too deeply",
                    f"arrays and objects nest {depth} deep, at most {MAX_DEPTH} are taken",
                )  # fmt: skip
            try:
                data = json.loads(body)
            except json.JSONDecodeError as e:  # what FastAPI says of invalid JSON
                return None, _json_error("json_invalid", e.pos, "JSON decode error", e.msg)
            except ValueError:  # not UTF-8 and the like: left to FastAPI's own answer
                return None, []
            if field is None or not validate:
                return data, []
            value, errors = field.validate(data, {}, loc=("body",))
            return value, errors

        async def handle(request: Request) -> Response:
            if request.method in BODY_METHODS:
                if sign_in_first:  # no body is read, let alone parsed, for a stranger
                    from services.gateway.auth import current_principal

                    await current_principal(request)
                if takes_json and is_json(request.headers.get("content-type")):
                    body = await request.body()
                    if body:
                        large = len(body) >= THREAD_FROM_BYTES
                        value, errors = (
                            await asyncio.to_thread(parse, body, True) if large
                            else parse(body, False)
                        )  # fmt: skip
                        if errors:
                            raise RequestValidationError(errors)
                        if value is not None:
                            request._json = value
            return await handler(request)

        return handle
