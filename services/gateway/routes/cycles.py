"""Routes of finished cycles: detail, samples, analysis, overlay, alerts, PDF report."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

import nats.errors
from fastapi import (
    APIRouter,
    Depends,
    Query,
    Request,
)
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from edge.registry_client import lookup
from schemas.frames import Frame
from schemas.messages import (
    CycleAlerts,
    CycleDetail,
    CycleOverlay,
    ListReferences,
    ReferenceInfo,
)
from services.gateway.auth import role
from services.gateway.bodies import OffLoopJson
from services.gateway.logic import (
    cycle_overlay,
    recording_csv,
    recording_json,
)
from services.gateway.report import analysis_csv, cycle_pdf
from services.gateway.state import (
    CONFLICT,
    REPORT_POINTS,
    CycleIdPath,
    Gateway,
    gw,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=OffLoopJson, tags=["cycles"], dependencies=[Depends(role("viewer"))])


@router.get("/api/live/cycles/{cycle_id}", response_model=CycleDetail)
async def get_cycle(cycle_id: CycleIdPath, request: Request) -> CycleDetail:
    """One cycle and its latest analysis."""
    return (await gw(request).cycle(cycle_id))[0]


@router.get(
    "/api/live/cycles/{cycle_id}/samples",
    response_model=None,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **CONFLICT},
)
async def cycle_samples(
    cycle_id: CycleIdPath,
    request: Request,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """The recorded samples of a finished cycle, as JSON columns or CSV rows."""
    _, frame = await gw(request).recorded(cycle_id)
    if format == "csv":
        return PlainTextResponse(
            recording_csv(frame),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{cycle_id}.csv"'},
        )
    return JSONResponse({"cycle_id": cycle_id, "sensors": recording_json(frame)})


@router.get(
    "/api/live/cycles/{cycle_id}/analysis.csv",
    response_model=None,
    responses={200: {"content": {"text/csv": {}}}, **CONFLICT},
)
async def cycle_analysis_csv(cycle_id: CycleIdPath, request: Request) -> Response:
    """The cycle's analysis, one row per sensor, as CSV."""
    detail, _ = await gw(request).cycle(cycle_id)
    return PlainTextResponse(
        analysis_csv(detail),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{cycle_id}-analysis.csv"'},
    )


async def reference_of(g: Gateway, detail: CycleDetail) -> ReferenceInfo | None:
    """The reference the cycle was compared with, curves included (None when unknown)."""
    version = detail.analysis.reference_version if detail.analysis else None
    if not version:
        return None
    body = ListReferences(stream_id=detail.cycle.stream_id, reference_version=version)
    try:
        status, data = await g.port.reference_request(
            detail.cycle.stream_id, "get", body.model_dump_json().encode()
        )
    except nats.errors.Error:
        log.warning("cycle shown without reference curves: analysis did not answer")
        return None
    return ReferenceInfo.model_validate(json.loads(data)[0]) if status == 200 else None


async def overlay_of(
    g: Gateway, detail: CycleDetail, recording: Frame, points: int
) -> CycleOverlay:
    reference = await reference_of(g, detail)
    order = [d.sensor_id for d in detail.analysis.sensors] if detail.analysis else []
    record = await lookup(g.port.kv_streams, detail.cycle.stream_id)
    units = {s.id: s.unit for s in record.sensors} if record else {}
    return await asyncio.to_thread(
        cycle_overlay, detail.cycle.cycle_id, recording, reference, order, units, points
    )


@router.get("/api/live/cycles/{cycle_id}/overlay", response_model=CycleOverlay, responses=CONFLICT)
async def cycle_overlay_data(
    cycle_id: CycleIdPath,
    request: Request,
    points: Annotated[int, Query(ge=10, le=20_000)] = REPORT_POINTS,
) -> CycleOverlay:
    """Every sensor of a finished cycle (at most ``points`` per sensor) over the reference's
    mean and envelope: the data of the report's charts."""
    g = gw(request)
    detail, recording = await g.recorded(cycle_id)
    return await overlay_of(g, detail, recording, points)


@router.get("/api/live/cycles/{cycle_id}/alerts", response_model=CycleAlerts)
async def cycle_alerts(cycle_id: CycleIdPath, request: Request) -> CycleAlerts:
    """Alerts active while the cycle ran, grouped by severity, rule and sensor."""
    g = gw(request)
    detail, _ = await g.cycle(cycle_id)
    return await g.cycle_alerts(detail)


@router.get(
    "/api/live/cycles/{cycle_id}/report.pdf",
    response_model=None,
    responses={200: {"content": {"application/pdf": {}}}, **CONFLICT},
)
async def cycle_report(cycle_id: CycleIdPath, request: Request) -> Response:
    """A PDF report of the cycle: score, recommendations, sensors, overlays on the reference."""
    g = gw(request)
    detail, name = await g.cycle(cycle_id)
    recording = await g.port.recording(name) if name else None  # a report without charts
    overlay = await overlay_of(g, detail, recording, REPORT_POINTS) if recording else None
    alerts = await g.cycle_alerts(detail)
    pdf = await asyncio.to_thread(cycle_pdf, detail, overlay, alerts)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{cycle_id}.pdf"'},
    )
