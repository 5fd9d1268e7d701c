"""JSON request bodies of some size are parsed on a worker thread, so one large batch does not
hold up every other request and WebSocket of the process while it is parsed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

THREAD_FROM_BYTES = 256 * 1024  # below this, parsing takes less than a thread hand-off


class OffLoopJson(APIRoute):
    """An APIRoute that parses a large JSON body with ``json.loads`` on a thread and hands the
    result to FastAPI (which reads ``request.json()``, cached); pydantic's validation of the
    parsed body still runs on the event loop. Invalid JSON is left to FastAPI's own 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH") and "json" in request.headers.get(
                "content-type", ""
            ):
                body = await request.body()
                if len(body) >= THREAD_FROM_BYTES:
                    # invalid JSON: FastAPI parses it again and answers 422 saying where
                    with contextlib.suppress(ValueError):
                        request._json = await asyncio.to_thread(json.loads, body)
            return await handler(request)

        return handle
