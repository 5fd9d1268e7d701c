"""How the gateway answers errors: one JSON body (:class:`ErrorBody`) naming the field."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import nats.errors
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas import subjects
from schemas.messages import (
    ErrorBody,
    ErrorDetail,
)
from services.gateway.limits import BodyError
from services.gateway.state import ApiError, error

log = logging.getLogger(__name__)


def allowed_methods(app: Any, scope: MutableMapping[str, Any]) -> list[str]:
    """The methods of every route whose path matches the request's."""
    from starlette.routing import Match, Route

    def flat(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            nested = getattr(route, "original_router", None)  # an included router (no prefix)
            yield from flat(nested.routes) if nested is not None else [route]

    methods: set[str] = set()
    for route in flat(app.routes):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**scope, "method": next(iter(route.methods))})
            if match == Match.FULL:
                methods |= route.methods
    return sorted(methods)


BODY_SHAPES = ("current", "v0.2")  # tags of the two accepted body shapes, not fields


def error_field(loc: tuple[int | str, ...]) -> str:
    """The dotted field of a validation error, e.g. ``body.samples.0.value`` (the tag of the
    body shape it was validated as is left out)."""
    parts = [str(p) for i, p in enumerate(loc) if not (i == 1 and p in BODY_SHAPES)]
    if parts[:1] == ["path"]:  # a path parameter goes by its name, as it always has
        parts = parts[1:]
    return ".".join(parts)


def install(app: FastAPI) -> None:
    """The exception handlers of the gateway."""

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [ErrorDetail(field=error_field(e["loc"]), message=e["msg"]) for e in exc.errors()]
        body = ErrorBody(error="request is not valid", details=details)
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(subjects.InvalidStreamId)
    async def on_stream_id(_: Request, exc: subjects.InvalidStreamId) -> JSONResponse:
        # a change to a site's stream at central (it is made at the site), or an id no subject
        # can name
        status = 409 if isinstance(exc, subjects.SiteStream) else 422
        return error(status, str(exc), "stream_id")

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        response = error(exc.status, exc.message, exc.field)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = exc.field if isinstance(exc, BodyError) else ""
        if exc.status_code == 400 and not field:
            field = "body"  # FastAPI's "There was an error parsing the body"
        response = error(exc.status_code, str(exc.detail), field)
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:  # every method of the path, not only those of one route
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return response

    @app.exception_handler(psycopg.DataError)
    async def on_data_error(_: Request, exc: psycopg.DataError) -> JSONResponse:
        return error(422, f"PostgreSQL cannot store a value of the request: {exc}", "body")

    @app.exception_handler(UnicodeEncodeError)
    async def on_encoding(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        return error(422, f"a text holds characters that are not valid Unicode ({exc.reason})")

    @app.exception_handler(nats.errors.Error)
    async def on_bus_error(_: Request, exc: nats.errors.Error) -> JSONResponse:
        log.warning("bus unavailable", extra={"error": repr(exc)})
        return error(503, f"the message bus is unavailable ({type(exc).__name__}); retry later")
