"""Routes anyone may call: health, the AsyncAPI document, the dashboard page; and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from fastapi import (
    APIRouter,
    Depends,
    Request,
)
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.asyncapi import document as asyncapi_document
from schemas.messages import (
    HealthStatus,
    SiteLinkStatus,
)
from services import __version__
from services.gateway.auth import current_principal, role
from services.gateway.bodies import OffLoopJson
from services.gateway.state import (
    DASHBOARD,
    STATIC,
    ApiError,
    gw,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=OffLoopJson, tags=["system"])


async def signed_in(request: Request) -> bool:
    try:
        await current_principal(request)
    except ApiError:
        return False
    return True


@router.get("/api/health", response_model=HealthStatus)
async def health(request: Request) -> JSONResponse:
    """``ok`` when the bus and the database answer, else 503 with what failed. Open to
    anyone (load balancers, probes); the version, the process and the errors' text are told
    only to a signed-in caller."""
    g = gw(request)
    bus_state, db_state = await asyncio.gather(g.port.healthy(), g.db.healthy())
    ok = bus_state == "ok" and db_state == "ok"
    if await signed_in(request):
        body = HealthStatus(
            status="ok" if ok else "degraded", bus=bus_state, database=db_state,
            version=__version__, pid=os.getpid(),
        )  # fmt: skip
    else:
        body = HealthStatus(
            status="ok" if ok else "degraded",
            bus="ok" if bus_state == "ok" else "error",
            database="ok" if db_state == "ok" else "error",
        )
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())


@router.get(
    "/api/sites", response_model=list[SiteLinkStatus], dependencies=[Depends(role("viewer"))]
)
async def sites(request: Request) -> list[SiteLinkStatus]:
    """At a central VerTac: each site's link state and lag (none elsewhere)."""
    g = gw(request)
    return list(await asyncio.gather(*(g.port.site_link(s) for s in g.sites)))


@router.get("/api/asyncapi.json")
async def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bus."""
    return asyncapi_document()


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(role("viewer"))])
async def metrics(request: Request) -> Response:
    return Response(generate_latest(gw(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index() -> Response:
    built = DASHBOARD / "index.html"
    if built.is_file():
        return FileResponse(built, headers={"Cache-Control": "no-cache"})
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
