"""Routes of streams: status, recent and historic samples, cycle configuration and commands."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    Query,
    Request,
)
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from edge.registry_client import lookup
from schemas import subjects
from schemas.messages import (
    CommandAccepted,
    CycleConfig,
    CycleSummary,
    HistorySamples,
    StreamRegistered,
    StreamStatus,
    WsSamples,
)
from services.common.auth import Principal
from services.gateway.auth import Admin, Operator, role
from services.gateway.bodies import OffLoopJson
from services.gateway.history import PARQUET, history_csv, history_parquet
from services.gateway.logic import (
    Decimator,
)
from services.gateway.state import (
    ASKS_OWNER,
    ApiError,
    IsoTime,
    StreamIdPath,
    StreamIdQuery,
    _utc,
    gw,
    valid_stream_id,
)

log = logging.getLogger(__name__)
router = APIRouter(
    route_class=OffLoopJson, tags=["streams"], dependencies=[Depends(role("viewer"))]
)


async def cycle_command(
    request: Request, who: Principal, stream_id: str, command: str
) -> CommandAccepted:
    g = gw(request)
    await g.registered(stream_id)  # at central, a site's stream: the command runs at the site
    seq = await g.command(who, stream_id, command, "rest")
    return CommandAccepted(stream_id=stream_id, command=command, stream_seq=seq)


@router.post("/api/live/cycle/start", status_code=202, response_model=CommandAccepted)
async def cycle_start(request: Request, stream_id: StreamIdQuery, who: Operator) -> CommandAccepted:
    """Ask the cycles service to start a cycle on ``stream_id``."""
    return await cycle_command(request, who, stream_id, "cycle_start")


@router.post("/api/live/cycle/stop", status_code=202, response_model=CommandAccepted)
async def cycle_stop(request: Request, stream_id: StreamIdQuery, who: Operator) -> CommandAccepted:
    """Ask the cycles service to stop the running cycle on ``stream_id``."""
    return await cycle_command(request, who, stream_id, "cycle_stop")


@router.get("/api/live/streams", response_model=list[StreamRegistered])
async def list_streams(
    request: Request,
    site: Annotated[
        str | None,
        Query(pattern=subjects.SITE_PATTERN, description="At central: one site's streams only."),
    ] = None,
) -> list[StreamRegistered]:
    """Every registered stream (at central, the sites' too, as ``<site>.<stream id>``)."""
    streams = await gw(request).port.streams()
    if site is None:
        return streams
    return [s for s in streams if s.stream_id.startswith(f"{site}.")]


@router.get("/api/live/stream/{stream_id}/status", response_model=StreamStatus)
async def stream_status(stream_id: StreamIdPath, request: Request) -> StreamStatus:
    """Registration, cycle state and what has been persisted of one stream."""
    g = gw(request)
    record = await lookup(g.port.kv_streams, stream_id)
    persisted = await g.db.persisted(stream_id)
    if record is None and persisted.frames == 0:
        raise ApiError(404, f"stream {stream_id!r} is unknown", "stream_id")
    return StreamStatus(
        stream_id=stream_id,
        registered=record is not None,
        device_name=record.device_name if record else None,
        sensors=record.sensors if record else [],
        # a site's stream at central: its newest cycle row (the site's events, stored)
        cycle_state=await g.port.cycle_state(stream_id)
        if subjects.site_of(stream_id) is None
        else await g.cycles.state(stream_id),
        frames_persisted=persisted.frames,
        samples_persisted=persisted.samples,
        last_seq=persisted.last_seq,
        last_sample_at=persisted.last_sample_at,
    )


@router.get("/api/live/stream/{stream_id}/recent", response_model=WsSamples)
async def recent_samples(
    stream_id: StreamIdPath,
    request: Request,
    seconds: Annotated[float, Query(gt=0, le=300)] = 30,
) -> WsSamples:
    """The last ``seconds`` of the stream's samples as the WebSocket sends them (min/max/mean
    buckets, same density), so a page shows a full window at once instead of filling it."""
    g = gw(request)
    g.site_of(stream_id)  # a site's: one this central takes
    frames = await g.port.recent_frames(stream_id, seconds, limit=20_000)
    buckets = max(1, math.ceil(g.settings.ws_points_per_second * seconds))
    decimator = Decimator(stream_id, buckets)
    for frame in frames:
        decimator.add(frame)
    message = await asyncio.to_thread(decimator.flush)
    if message is None:
        return WsSamples(stream_id=stream_id, seq=-1, sensors={})
    return message.model_copy(update={"sent_ms": []})


@router.get(
    "/api/live/stream/{stream_id}/samples",
    response_model=HistorySamples,
    responses={200: {"content": {"text/csv": {}, PARQUET: {}}}},
)
async def history(
    stream_id: StreamIdPath,
    request: Request,
    start: Annotated[
        IsoTime | None, Query(description="Start (ISO time; default: end - 1 h).")
    ] = None,
    end: Annotated[IsoTime | None, Query(description="End (ISO time; default: now).")] = None,
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    sensors: Annotated[
        str | None, Query(description="Comma-separated sensor ids (default: all).")
    ] = None,
    format: Annotated[str, Query(pattern="^(json|csv|parquet)$")] = "json",
) -> Response:
    """Any range of the stream's samples as at most ``max_points`` min/max/mean buckets per
    sensor: from raw frames (spans up to 10 min with buckets under 1 s), else from the 1 s or
    1 min rollups. JSON, or CSV / Parquet (one row per bucket) to download."""
    g = gw(request)
    end = _utc(end) if end is not None else datetime.now(UTC)
    start = _utc(start) if start is not None else end - timedelta(hours=1)
    if start >= end:
        raise ApiError(422, "start must be before end", "query.start")
    wanted = [x for x in sensors.split(",") if x] if sensors else None
    h = await g.history.samples(stream_id, start, end, max_points, wanted)
    name = f"{stream_id}-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"
    if format == "csv":
        return PlainTextResponse(
            history_csv(h),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if format == "parquet":
        return Response(
            await asyncio.to_thread(history_parquet, h),
            media_type=PARQUET,
            headers={"Content-Disposition": f'attachment; filename="{name}.parquet"'},
        )
    return JSONResponse(h.model_dump(mode="json"))


@router.get("/api/live/stream/{stream_id}/cycle-config", response_model=CycleConfig)
async def get_cycle_config(stream_id: StreamIdPath, request: Request) -> CycleConfig:
    """How cycles of this stream start and end (manual when never set)."""
    valid_stream_id(stream_id)
    return await gw(request).port.cycle_config(stream_id)


@router.put(
    "/api/live/stream/{stream_id}/cycle-config", response_model=CycleConfig, responses=ASKS_OWNER
)
async def put_cycle_config(
    stream_id: StreamIdPath, body: CycleConfig, request: Request, who: Admin
) -> CycleConfig:
    """Set the cycle trigger and limits; the cycles service applies it from the next frame."""
    g = gw(request)
    await g.registered(valid_stream_id(stream_id))
    before = await g.port.cycle_config(stream_id)
    subject = subjects.cycle_control(stream_id, "config")
    kept = await g.ask("cycles", subject, body.model_dump_json().encode(), fields="body.")
    config = CycleConfig.model_validate_json(kept)
    await g.audit.record(who, "cycle_config.put", stream_id, before, config)
    return config


def _cursor_of(cycle: CycleSummary) -> str:
    started = cycle.started_at or datetime(1970, 1, 1, tzinfo=UTC)  # every stored cycle has one
    text = f"{started.isoformat()}|{cycle.cycle_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, cycle_id = text.split("|", 1)
        return datetime.fromisoformat(at), cycle_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "cursor: not one this API gave (X-Next-Cursor)", "cursor") from exc


@router.get(
    "/api/live/stream/{stream_id}/cycles",
    response_model=list[CycleSummary],
    responses={200: {"headers": {
        "X-Next-Cursor": {"description": "Pass as cursor for the next (older) page; absent on "
                          "the last page.", "schema": {"type": "string"}},
        "Link": {"description": "The next page's URL, rel=\"next\".", "schema": {"type": "string"}},
    }}},
)  # fmt: skip
async def list_cycles(
    stream_id: StreamIdPath,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000, description="Cycles per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=400, description="X-Next-Cursor of the previous page.")
    ] = None,
    start: Annotated[IsoTime | None, Query(description="Started at or after (ISO time).")] = None,
    end: Annotated[IsoTime | None, Query(description="Started before (ISO time).")] = None,
) -> list[CycleSummary]:
    """Cycles, newest first, with their health score: a page of ``limit``, the next (older)
    one with ``cursor``, optionally only those started in ``start``..``end``."""
    after = _after(cursor) if cursor else None
    page = await gw(request).cycles.list(stream_id, limit + 1, start=start, end=end, after=after)
    if len(page) > limit:
        page = page[:limit]
        token = _cursor_of(page[-1])
        response.headers["X-Next-Cursor"] = token
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=token)}>; rel="next"'
    return page
