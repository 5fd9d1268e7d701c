"""Wiring of the gateway: FastAPI routes, WebSocket bridge, lifespan (bus, database)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import nats.errors
import psycopg
import uvicorn
from fastapi import Body, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas import logs, subjects
from schemas.asyncapi import document as asyncapi_document
from schemas.client import ServerUnreachable, lookup, register, reserve_seq
from schemas.compat import (
    BATCH_EXAMPLES,
    REGISTER_EXAMPLES,
    BatchBody,
    LegacyBatch,
    LegacyRegistration,
    RegisterBody,
)
from schemas.frames import Frame, FrameError
from schemas.messages import (
    AcknowledgeAlert,
    ActivateReference,
    AlertRule,
    BatchAccepted,
    BufferStatus,
    CommandAccepted,
    CreateReference,
    CycleAlerts,
    CycleCommand,
    CycleConfig,
    CycleDetail,
    CycleOverlay,
    CycleSummary,
    DatasetEntry,
    DatasetEntryBody,
    DatasetImported,
    DatasetImportedCycle,
    DatasetInfo,
    DryRunBody,
    DryRunReference,
    DryRunResult,
    ErrorBody,
    ErrorDetail,
    HealthStatus,
    HistorySamples,
    ListReferences,
    NewReferenceBody,
    ReferenceInfo,
    RegisterResponse,
    StreamRegistered,
    StreamStatus,
    WsCommandAck,
    WsError,
    WsPong,
    WsReady,
    WsSamples,
)
from schemas.v1.alerts import RULE_ID_PATTERN
from schemas.v1.base import ALERT_ID_PATTERN, CYCLE_ID_PATTERN
from services import __version__
from services.common.config import CommonSettings
from services.common.datasets import (
    DatasetError,
    ExportedCycle,
    export_parquet,
    export_zip,
    parse_cycles,
    read_file,
    store_cycles,
    unpack_upload,
)
from services.common.db import open_pool
from services.common.metrics import Metrics
from services.common.runtime import EXIT_UNREACHABLE, open_bus
from services.gateway import raw_history
from services.gateway.adapters import (
    AlertQueries,
    AlertRulesKv,
    BusPort,
    CycleQueries,
    Database,
    Datasets,
)
from services.gateway.config import Settings
from services.gateway.fanout import FeedHub, Viewer
from services.gateway.history import PARQUET, HistoryQueries, history_csv, history_parquet
from services.gateway.limits import BodyError, OriginPolicy, RequestLimits
from services.gateway.logic import (
    BadTimestamp,
    CommandError,
    Decimator,
    UnknownSensor,
    batch_to_frame,
    cycle_overlay,
    envelope,
    group_alerts,
    legacy_batch,
    parse_command,
    recording_csv,
    recording_json,
    split_batch,
)
from services.gateway.report import analysis_csv, cycle_pdf
from services.gateway.wsproto import EXTENSION, FanoutWebSocketProtocol

SERVICE = "gateway"
STATIC = Path(__file__).parent / "static"
DASHBOARD = STATIC / "app"  # the Vite build of services/gateway/web (``make web``)
DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IMPORT_MAX_BYTES = 256 * 2**20  # one import request (a file or a zip of files)
INT4_MAX = 2**31 - 1
FRAME_SAMPLES = 32_768  # samples per frame of a REST batch (a frame must fit a bus message)
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The cycle has no recording yet (still running)."}
}
# path and query parameters, declared with the patterns the stores accept (the OpenAPI says so)
StreamIdPath = Annotated[
    str, PathParam(pattern=subjects.STREAM_ID_PATTERN, description="Stream id.")
]
StreamIdQuery = Annotated[str, Query(pattern=subjects.STREAM_ID_PATTERN, description="Stream id.")]
CycleIdPath = Annotated[str, PathParam(pattern=CYCLE_ID_PATTERN, description="Cycle id.")]
RuleIdPath = Annotated[str, PathParam(pattern=RULE_ID_PATTERN, description="Rule id.")]
AlertIdPath = Annotated[str, PathParam(pattern=ALERT_ID_PATTERN, description="Alert id.")]
DatasetPath = Annotated[str, PathParam(pattern=DATASET_NAME, description="Dataset name.")]
VersionPath = Annotated[
    int, PathParam(ge=1, le=INT4_MAX, description="Reference version (1, 2, ...).")
]
REPORT_POINTS = 800  # points per sensor in the report's charts (dashboard and PDF alike)
log = logging.getLogger(__name__)


def error(status: int, message: str, field: str = "") -> JSONResponse:
    details = [ErrorDetail(field=field, message=message)] if field else []
    body = ErrorBody(error=message, details=details)
    return JSONResponse(status_code=status, content=body.model_dump())


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _utc(moment: datetime) -> datetime:
    """A query's time; one without a zone is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def valid_stream_id(stream_id: str, field: str = "stream_id") -> str:
    try:
        return subjects.check_stream_id(stream_id)
    except subjects.InvalidStreamId as exc:
        raise ApiError(422, str(exc), field) from exc


class Gateway:
    """State shared by the routes: adapters, settings and metrics."""

    def __init__(
        self,
        settings: Settings,
        port: BusPort,
        db: Database,
        cycles: CycleQueries,
        alerts: AlertQueries,
        rules: AlertRulesKv,
        metrics: Metrics,
        datasets: Datasets,
        history: HistoryQueries,
    ) -> None:
        self.settings = settings
        self.port = port
        self.db = db
        self.cycles = cycles
        self.alerts = alerts
        self.rules = rules
        self.metrics = metrics
        self.datasets = datasets
        self.history = history
        self.ws_clients = Gauge(
            "vertac_websocket_clients", "Open WebSocket connections", registry=metrics.registry
        )
        self.hub = FeedHub(port.bus.nc, settings.ws_interval_ms, settings.ws_points_per_second)
        hub = self.hub
        Gauge("vertac_gateway_feeds", "Streams with viewers (one decode each)",
              registry=metrics.registry).set_function(lambda: len(hub.feeds))  # fmt: skip
        Gauge("vertac_gateway_feed_subscriptions", "NATS subscriptions held for viewers",
              registry=metrics.registry).set_function(lambda: hub.subscriptions)  # fmt: skip
        metrics.registry.register(SkippedUpdates(hub))

    async def cycle(self, cycle_id: str, field: str = "cycle_id") -> tuple[CycleDetail, str | None]:
        """The cycle with its latest analysis, and its recording's name; 404 when unknown."""
        found = await self.cycles.one(cycle_id)
        if found is None:
            raise ApiError(404, f"cycle {cycle_id!r} is unknown", field)
        return found

    async def recorded(self, cycle_id: str) -> tuple[CycleDetail, Frame]:
        """The cycle and its recorded samples; 409 while it has none (still running)."""
        detail, name = await self.cycle(cycle_id)
        frame = await self.port.recording(name) if name else None
        if frame is None:
            raise ApiError(
                409, f"cycle {cycle_id!r} has no recording yet (still running?)", "cycle_id"
            )
        return detail, frame

    async def cycle_alerts(self, detail: CycleDetail) -> CycleAlerts:
        """Alerts of the cycle's stream that were active while it ran, grouped."""
        c = detail.cycle
        rows = await self.alerts.find(c.stream_id, None, None, 1000, c.started_at, c.ended_at)
        return CycleAlerts(cycle_id=c.cycle_id, groups=group_alerts(rows))

    async def registered(self, stream_id: str) -> StreamRegistered:
        record = await lookup(self.port.kv_streams, stream_id)
        if record is None:
            raise ApiError(
                404,
                f"stream {stream_id!r} is not registered; POST /api/live/register first",
                "stream_id",
            )
        return record

    async def command(self, stream_id: str, command: str, source: str, reason: str = "") -> int:
        cmd = CycleCommand(
            stream_id=stream_id,
            command=command,
            issued_at=datetime.now(UTC),
            source=source,
            reason=reason,
        )
        ack = await self.port.publish_command(cmd)
        self.metrics.messages_out.labels(SERVICE, "control").inc()
        return int(ack.seq)


def allowed_methods(app: Any, scope: MutableMapping[str, Any]) -> list[str]:
    """The methods of every route whose path matches the request's."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in app.routes:
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


def build_app(settings: Settings, common: CommonSettings) -> FastAPI:
    """The gateway's ASGI app; the lifespan connects to the bus and the database."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus = await open_bus(common, f"vertac-{SERVICE}")
        pool = await open_pool(
            common.database_url,
            retry=common.startup_retry,
            name=SERVICE,
            migrate_first=common.auto_migrate,
        )
        app.state.gw = Gateway(
            settings,
            await BusPort.open(bus),
            Database(pool),
            CycleQueries(pool),
            AlertQueries(pool),
            AlertRulesKv(await bus.js.key_value(subjects.KV_ALERT_RULES)),
            Metrics(SERVICE),
            Datasets(pool),
            HistoryQueries(pool),
        )
        app.state.bus = bus
        # compile the raw-history kernels in the background: the first query need not wait
        app.state.warm_up = asyncio.create_task(asyncio.to_thread(raw_history.warm_up))
        log.info("gateway ready", extra={"host": settings.host, "port": settings.port})
        try:
            yield
        finally:
            await app.state.gw.hub.close()
            await bus.close()
            await pool.close()

    app = FastAPI(
        title="VerTac gateway",
        version=__version__,
        description="REST and WebSocket API of VerTac. Bus subjects: /api/asyncapi.json.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody, "description": "The body is not valid JSON or UTF-8."},
            404: {"model": ErrorBody},
            413: {"model": ErrorBody, "description": "The body is over the limit."},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody, "description": "The bus or the database is unavailable."},
        },
    )
    app.add_middleware(OriginPolicy, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(
        RequestLimits,
        max_body=settings.max_body_bytes,
        files={"/api/live/datasets/*/import": IMPORT_MAX_BYTES},
    )

    def gw(request: Request) -> Gateway:
        g: Gateway = request.app.state.gw
        return g

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [ErrorDetail(field=error_field(e["loc"]), message=e["msg"]) for e in exc.errors()]
        body = ErrorBody(error="request is not valid", details=details)
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.field)

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

    @app.post("/api/live/register", status_code=201, response_model=RegisterResponse)
    async def register_stream(
        body: Annotated[RegisterBody, Body(openapi_examples=REGISTER_EXAMPLES)], request: Request
    ) -> RegisterResponse:
        """Register a machine and its sensors (idempotent: registering again updates it). Takes
        today's body (``sensors: [{id, name, type, unit, rate_hz}]``) or VerTac v0.2.0's
        (``sensor_count``, ``sensors: [{sensor_id, name, type, unit}]``, no stream id)."""
        g = gw(request)
        registration = body.current() if isinstance(body, LegacyRegistration) else body
        record, existed = await register(g.port.bus.js, g.port.kv_streams, registration)
        g.metrics.messages_out.labels(SERVICE, "registry").inc()
        return RegisterResponse(
            stream_id=record.stream_id,
            dataset_id=record.dataset_id,
            status="updated" if existed else "registered",
            warnings=body.warnings() if isinstance(body, LegacyRegistration) else [],
            samples_subject=subjects.samples(record.stream_id),
            control_subject=subjects.control(record.stream_id),
            websocket=f"/api/live/ws/stream/{record.stream_id}",
        )

    @app.post("/api/live/batch", response_model=BatchAccepted)
    async def post_batch(
        raw: Annotated[BatchBody, Body(openapi_examples=BATCH_EXAMPLES)], request: Request
    ) -> BatchAccepted:
        """Accept samples as JSON; answers only after JetStream stored them as one frame. Takes
        today's columnar body (``samples: [{timestamp, values: {sensor: value}}]``) or VerTac
        v0.2.0's (one record per sample: ``timestamp, sensor_id | sensor_name, value, unit,
        quality`` 0-1)."""
        g = gw(request)
        record = await g.registered(raw.stream_id)
        try:
            body = legacy_batch(raw, record.sensors) if isinstance(raw, LegacyBatch) else raw
        except UnknownSensor as exc:
            raise ApiError(422, str(exc), f"body.{exc.field}") from exc
        # one frame per part of at most FRAME_SAMPLES samples (a frame must fit a bus message);
        # every part is checked before any sequence number is taken
        parts = []
        try:
            for part in split_batch(body, FRAME_SAMPLES):
                parts.append(batch_to_frame(part, 0, time.time_ns(), record.sensors))
        except UnknownSensor as exc:
            raise ApiError(422, str(exc), f"body.{exc.field}") from exc
        except BadTimestamp as exc:
            raise ApiError(422, str(exc), f"body.{exc.field}") from exc
        except (ValueError, FrameError) as exc:
            raise ApiError(422, str(exc), "body.samples") from exc
        first = ""
        seqs, acks = [], []
        for k, frame in enumerate(parts):
            seq = await reserve_seq(g.port.kv_seq, body.stream_id)
            base = (
                f"{body.stream_id}:batch:{body.batch_id}"
                if body.batch_id
                else subjects.dedup_id(body.stream_id, seq)
            )
            msg_id = first = base if k == 0 else f"{first}:{k}"
            acks.append(await g.port.publish_frame(dataclasses.replace(frame, seq=seq), msg_id))
            seqs.append(seq)
            g.metrics.messages_out.labels(SERVICE, "samples").inc()
        ack = acks[-1]
        return BatchAccepted(
            ack_id=first,
            seq=seqs[0],
            samples_received=sum(f.n_samples for f in parts),
            buffer=BufferStatus(
                stream=ack.stream, stream_seq=ack.seq, duplicate=all(a.duplicate for a in acks)
            ),
        )

    async def cycle_command(request: Request, stream_id: str, command: str) -> CommandAccepted:
        g = gw(request)
        valid_stream_id(stream_id)
        await g.registered(stream_id)
        seq = await g.command(stream_id, command, "rest")
        return CommandAccepted(stream_id=stream_id, command=command, stream_seq=seq)

    @app.post("/api/live/cycle/start", status_code=202, response_model=CommandAccepted)
    async def cycle_start(request: Request, stream_id: StreamIdQuery) -> CommandAccepted:
        """Ask the cycles service to start a cycle on ``stream_id``."""
        return await cycle_command(request, stream_id, "cycle_start")

    @app.post("/api/live/cycle/stop", status_code=202, response_model=CommandAccepted)
    async def cycle_stop(request: Request, stream_id: StreamIdQuery) -> CommandAccepted:
        """Ask the cycles service to stop the running cycle on ``stream_id``."""
        return await cycle_command(request, stream_id, "cycle_stop")

    @app.get("/api/live/streams", response_model=list[StreamRegistered])
    async def list_streams(request: Request) -> list[StreamRegistered]:
        """Every registered stream."""
        g = gw(request)
        records = [await lookup(g.port.kv_streams, sid) for sid in await g.port.stream_ids()]
        return [r for r in records if r is not None]

    @app.get("/api/live/stream/{stream_id}/status", response_model=StreamStatus)
    async def stream_status(stream_id: StreamIdPath, request: Request) -> StreamStatus:
        """Registration, cycle state and what has been persisted of one stream."""
        g = gw(request)
        valid_stream_id(stream_id)
        record = await lookup(g.port.kv_streams, stream_id)
        persisted = await g.db.persisted(stream_id)
        if record is None and persisted.frames == 0:
            raise ApiError(404, f"stream {stream_id!r} is unknown", "stream_id")
        return StreamStatus(
            stream_id=stream_id,
            registered=record is not None,
            device_name=record.device_name if record else None,
            sensors=record.sensors if record else [],
            cycle_state=await g.port.cycle_state(stream_id),
            frames_persisted=persisted.frames,
            samples_persisted=persisted.samples,
            last_seq=persisted.last_seq,
            last_sample_at=persisted.last_sample_at,
        )

    @app.get("/api/live/stream/{stream_id}/recent", response_model=WsSamples)
    async def recent_samples(
        stream_id: StreamIdPath,
        request: Request,
        seconds: Annotated[float, Query(gt=0, le=300)] = 30,
    ) -> WsSamples:
        """The last ``seconds`` of the stream's samples as the WebSocket sends them (min/max/mean
        buckets, same density), so a page shows a full window at once instead of filling it."""
        g = gw(request)
        valid_stream_id(stream_id)
        frames = await g.port.recent_frames(stream_id, seconds, limit=20_000)
        buckets = max(1, math.ceil(g.settings.ws_points_per_second * seconds))
        decimator = Decimator(stream_id, buckets)
        for frame in frames:
            decimator.add(frame)
        message = await asyncio.to_thread(decimator.flush)
        if message is None:
            return WsSamples(stream_id=stream_id, seq=-1, sensors={})
        return message.model_copy(update={"sent_ms": []})

    @app.get(
        "/api/live/stream/{stream_id}/samples",
        response_model=HistorySamples,
        responses={200: {"content": {"text/csv": {}, PARQUET: {}}}},
    )
    async def history(
        stream_id: StreamIdPath,
        request: Request,
        start: Annotated[
            datetime | None, Query(description="Start (ISO time; default: end - 1 h).")
        ] = None,
        end: Annotated[datetime | None, Query(description="End (ISO time; default: now).")] = None,
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
        valid_stream_id(stream_id)
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

    @app.get("/api/live/stream/{stream_id}/cycle-config", response_model=CycleConfig)
    async def get_cycle_config(stream_id: StreamIdPath, request: Request) -> CycleConfig:
        """How cycles of this stream start and end (manual when never set)."""
        valid_stream_id(stream_id)
        return await gw(request).port.cycle_config(stream_id)

    @app.put("/api/live/stream/{stream_id}/cycle-config", response_model=CycleConfig)
    async def put_cycle_config(
        stream_id: StreamIdPath, body: CycleConfig, request: Request
    ) -> CycleConfig:
        """Set the cycle trigger and limits; the cycles service applies it from the next frame."""
        g = gw(request)
        record = await g.registered(valid_stream_id(stream_id))
        if body.signal_sensor and body.signal_sensor not in {s.id for s in record.sensors}:
            raise ApiError(
                422, f"sensor {body.signal_sensor!r} is not registered", "body.signal_sensor"
            )
        await g.port.set_cycle_config(stream_id, body)
        return body

    @app.get("/api/live/stream/{stream_id}/cycles", response_model=list[CycleSummary])
    async def list_cycles(
        stream_id: StreamIdPath, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> list[CycleSummary]:
        """Recent cycles, newest first, with their health score."""
        return await gw(request).cycles.list(valid_stream_id(stream_id), limit)

    @app.get("/api/live/cycles/{cycle_id}", response_model=CycleDetail)
    async def get_cycle(cycle_id: CycleIdPath, request: Request) -> CycleDetail:
        """One cycle and its latest analysis."""
        return (await gw(request).cycle(cycle_id))[0]

    @app.get(
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

    async def ask_analysis(
        stream_id: StreamIdPath, op: str, body: bytes, request: Request
    ) -> Response:
        try:
            status, data = await gw(request).port.reference_request(stream_id, op, body)
        except nats.errors.NoRespondersError:
            return error(503, "the analysis service is not running; start it and retry")
        except nats.errors.TimeoutError:
            return error(504, "the analysis service did not answer in time")
        return Response(data, status_code=status, media_type="application/json")

    @app.get("/api/live/stream/{stream_id}/references", response_model=list[ReferenceInfo])
    async def list_references(stream_id: StreamIdPath, request: Request) -> Response:
        """Every reference version of a stream."""
        body = ListReferences(stream_id=valid_stream_id(stream_id)).model_dump_json().encode()
        return await ask_analysis(stream_id, "list", body, request)

    @app.get(
        "/api/live/stream/{stream_id}/references/{version}", response_model=list[ReferenceInfo]
    )
    async def get_reference(
        stream_id: StreamIdPath, version: VersionPath, request: Request
    ) -> Response:
        """One reference version with its mean curves and envelopes."""
        req = ListReferences(stream_id=valid_stream_id(stream_id), reference_version=version)
        return await ask_analysis(stream_id, "get", req.model_dump_json().encode(), request)

    @app.post(
        "/api/live/stream/{stream_id}/references", status_code=201, response_model=ReferenceInfo
    )
    async def create_reference(
        stream_id: StreamIdPath, body: NewReferenceBody, request: Request
    ) -> Response:
        """A new reference version from one or more good cycles (DTW barycenter + envelope)."""
        req = CreateReference(stream_id=valid_stream_id(stream_id), **body.model_dump())
        answer = await ask_analysis(stream_id, "create", req.model_dump_json().encode(), request)
        if answer.status_code == 200:
            answer.status_code = 201
        return answer

    @app.post(
        "/api/live/stream/{stream_id}/references/{version}/activate", response_model=ReferenceInfo
    )
    async def activate_reference(
        stream_id: StreamIdPath, version: VersionPath, request: Request
    ) -> Response:
        """Make a reference version the one new cycles are compared with."""
        req = ActivateReference(stream_id=valid_stream_id(stream_id), reference_version=version)
        return await ask_analysis(stream_id, "activate", req.model_dump_json().encode(), request)

    @app.post("/api/live/stream/{stream_id}/references/dry-run", response_model=DryRunResult)
    async def dry_run_reference(
        stream_id: StreamIdPath, body: DryRunBody, request: Request
    ) -> Response:
        """Scores and alert count a candidate reference would have given the last cycles."""
        try:
            req = DryRunReference(stream_id=valid_stream_id(stream_id), **body.model_dump())
        except ValidationError as exc:
            raise ApiError(422, exc.errors()[0]["msg"], "body") from exc
        return await ask_analysis(stream_id, "dry_run", req.model_dump_json().encode(), request)

    @app.get("/api/live/stream/{stream_id}/alert-rules", response_model=list[AlertRule])
    async def list_alert_rules(stream_id: StreamIdPath, request: Request) -> list[AlertRule]:
        """The stream's alert rules."""
        return await gw(request).rules.of_stream(valid_stream_id(stream_id))

    @app.put("/api/live/stream/{stream_id}/alert-rules/{rule_id}", response_model=AlertRule)
    async def put_alert_rule(
        stream_id: StreamIdPath, rule_id: RuleIdPath, body: dict[str, Any], request: Request
    ) -> AlertRule:
        """Create or replace a rule (``stream_id`` and ``rule_id`` come from the path)."""
        g = gw(request)
        record = await g.registered(valid_stream_id(stream_id))
        try:
            rule = AlertRule.model_validate({**body, "stream_id": stream_id, "rule_id": rule_id})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "body"
            raise ApiError(422, err["msg"], f"body.{field}" if field != "body" else field) from exc
        if rule.sensor_id and rule.sensor_id not in {s.id for s in record.sensors}:
            raise ApiError(422, f"sensor {rule.sensor_id!r} is not registered", "body.sensor_id")
        await g.rules.put(rule)
        return rule

    @app.delete("/api/live/stream/{stream_id}/alert-rules/{rule_id}", status_code=204)
    async def delete_alert_rule(
        stream_id: StreamIdPath, rule_id: RuleIdPath, request: Request
    ) -> Response:
        """Remove a rule."""
        if not await gw(request).rules.delete(valid_stream_id(stream_id), rule_id):
            raise ApiError(404, f"no rule {rule_id!r} on {stream_id}", "rule_id")
        return Response(status_code=204)

    @app.get("/api/live/alerts")
    async def list_alerts(
        request: Request,
        stream_id: Annotated[str | None, Query(pattern=subjects.STREAM_ID_PATTERN)] = None,
        state: Annotated[str | None, Query(pattern="^(raised|acknowledged|cleared)$")] = None,
        severity: Annotated[str | None, Query(pattern="^(info|warning|critical)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first, filtered by stream, state and severity; with ``since`` and
        ``until`` (ISO times) only alerts active at some moment in between, e.g. during a cycle."""
        return await gw(request).alerts.find(stream_id, state, severity, limit, since, until)

    @app.get("/api/live/alerts/{alert_id}/history")
    async def alert_history(alert_id: AlertIdPath, request: Request) -> list[dict[str, Any]]:
        """Every transition of one alert."""
        rows = await gw(request).alerts.history(alert_id)
        if not rows:
            raise ApiError(404, f"alert {alert_id!r} is unknown", "alert_id")
        return rows

    @app.post("/api/live/alerts/{alert_id}/ack")
    async def ack_alert(
        alert_id: AlertIdPath, body: AcknowledgeAlert, request: Request
    ) -> Response:
        """Acknowledge an alert, with who and why."""
        stream_id = alert_id.split(".", 1)[0]
        payload = json.dumps({"alert_id": alert_id, **body.model_dump()}).encode()
        try:
            reply = await gw(request).port.bus.nc.request(
                subjects.alert_control(valid_stream_id(stream_id, "alert_id"), "ack"),
                payload,
                timeout=30,
            )
        except nats.errors.NoRespondersError:
            return error(503, "the alerts service is not running; start it and retry")
        except nats.errors.TimeoutError:
            return error(504, "the alerts service did not answer in time")
        status = int((reply.headers or {}).get("Vertac-Status", "200"))
        answer = json.loads(reply.data)
        if status != 200:
            return error(status, answer.get("error", "acknowledge failed"), "alert_id")
        return JSONResponse(answer)

    @app.get(
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

    @app.get("/api/live/cycles/{cycle_id}/overlay", response_model=CycleOverlay, responses=CONFLICT)
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

    @app.get("/api/live/cycles/{cycle_id}/alerts", response_model=CycleAlerts)
    async def cycle_alerts(cycle_id: CycleIdPath, request: Request) -> CycleAlerts:
        """Alerts active while the cycle ran, grouped by severity, rule and sensor."""
        g = gw(request)
        detail, _ = await g.cycle(cycle_id)
        return await g.cycle_alerts(detail)

    @app.get(
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

    def valid_dataset(name: str) -> str:
        if not re.fullmatch(DATASET_NAME, name):
            raise ApiError(
                422,
                f"dataset name {name!r}: 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
                "dataset",
            )
        return name

    @app.get("/api/live/datasets", response_model=list[DatasetInfo])
    async def list_datasets(request: Request) -> list[DatasetInfo]:
        """Every dataset with its size, streams and label counts."""
        return await gw(request).datasets.all()

    @app.get("/api/live/datasets/{dataset}", response_model=list[DatasetEntry])
    async def get_dataset(dataset: DatasetPath, request: Request) -> list[DatasetEntry]:
        """The cycles of one dataset, oldest first, with label, note and health score."""
        entries = await gw(request).datasets.entries(valid_dataset(dataset))
        if not entries:
            raise ApiError(404, f"dataset {dataset!r} is empty or unknown", "dataset")
        return entries

    @app.post(
        "/api/live/datasets/{dataset}/cycles",
        status_code=201,
        response_model=DatasetEntry,
        responses=CONFLICT,
    )
    async def add_to_dataset(
        dataset: DatasetPath, body: DatasetEntryBody, request: Request
    ) -> DatasetEntry:
        """Save a finished cycle into a dataset (created on first use) with a label; saving it
        again updates label and note. Its samples stay in the recording store."""
        g = gw(request)
        detail, name = await g.cycle(body.cycle_id, "body.cycle_id")
        if name is None:
            raise ApiError(
                409, f"cycle {body.cycle_id!r} has no recording yet (still running?)",
                "body.cycle_id",
            )  # fmt: skip
        return await g.datasets.add(valid_dataset(dataset), detail.cycle.stream_id, body)

    @app.delete("/api/live/datasets/{dataset}/cycles/{cycle_id}", status_code=204)
    async def remove_from_dataset(
        dataset: DatasetPath, cycle_id: CycleIdPath, request: Request
    ) -> Response:
        """Take a cycle out of a dataset (the cycle itself is kept)."""
        if not await gw(request).datasets.remove(valid_dataset(dataset), cycle_id):
            raise ApiError(404, f"cycle {cycle_id!r} is not in dataset {dataset!r}", "cycle_id")
        return Response(status_code=204)

    @app.post(
        "/api/live/datasets/{dataset}/import", status_code=201, response_model=DatasetImported
    )
    async def import_dataset(
        dataset: DatasetPath,
        request: Request,
        stream_id: Annotated[
            str | None, Query(description="Stream the cycles belong to; default batch-<dataset>.")
        ] = None,
        label: Annotated[str, Query(max_length=64)] = "",
        filename: Annotated[str, Query(max_length=200)] = "cycle.csv",
    ) -> DatasetImported:
        """Import recorded cycles from a file in the body: CSV, Parquet, or a zip of such files
        (one cycle per file, or a ``cycle_id`` column). Each is stored like a live cycle and
        filed under the dataset; importing the same files again updates them."""
        g = gw(request)
        name = valid_dataset(dataset)
        target = valid_stream_id(stream_id) if stream_id else f"batch-{name}"[:64]
        chunks, size = [], 0
        async for chunk in request.stream():  # stop reading once over the limit
            size += len(chunk)
            if size > IMPORT_MAX_BYTES:
                raise ApiError(413, f"at most {IMPORT_MAX_BYTES // 2**20} MiB per import", "body")
            chunks.append(chunk)
        data = b"".join(chunks)
        try:
            files = unpack_upload(filename, data)
            parsed = [c for fname, raw in files for c in parse_cycles(fname, read_file(fname, raw))]
            imported = await store_cycles(
                g.port.bus.js, g.port.kv_streams, g.datasets.pool, name, target, parsed, label
            )
        except DatasetError as exc:
            raise ApiError(422, exc.message, exc.field) from exc
        return DatasetImported(
            dataset=name,
            stream_id=target,
            cycles=[DatasetImportedCycle(**dataclasses.asdict(c)) for c in imported],
        )

    @app.get(
        "/api/live/datasets/{dataset}/export",
        response_model=None,
        responses={200: {"content": {PARQUET: {}, "application/zip": {}}}},
    )
    async def export_dataset(
        dataset: DatasetPath,
        request: Request,
        format: Annotated[Literal["parquet", "csv"], Query()] = "parquet",
    ) -> Response:
        """The whole dataset as one file: Parquet (a row per sample with each cycle's score;
        every analysis in the file's metadata) or a zip of CSVs (a samples CSV per cycle, its
        analysis, and an index)."""
        g = gw(request)
        name = valid_dataset(dataset)
        entries = await g.datasets.entries(name)
        if not entries:
            raise ApiError(404, f"dataset {dataset!r} is empty or unknown", "dataset")
        cycles = []
        details = {}
        for e in entries:
            detail, rec = await g.cycle(e.cycle_id)
            details[e.cycle_id] = detail
            frame = await g.port.recording(rec) if rec else None
            analysis = detail.analysis.model_dump(mode="json") if detail.analysis else None
            cycles.append(ExportedCycle(e.cycle_id, e.stream_id, e.label, frame, analysis))
        if format == "parquet":
            body = await asyncio.to_thread(export_parquet, name, cycles)
            media, suffix = "application/vnd.apache.parquet", "parquet"
        else:
            body = await asyncio.to_thread(
                export_zip, name, cycles, recording_csv,
                lambda a: analysis_csv(details[a["cycle_id"]]),
            )  # fmt: skip
            media, suffix = "application/zip", "zip"
        return Response(
            body,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}.{suffix}"'},
        )

    @app.get("/api/health", response_model=HealthStatus)
    async def health(request: Request) -> JSONResponse:
        """``ok`` when the bus and the database answer, else 503 with what failed."""
        g = gw(request)
        bus_state, db_state = await asyncio.gather(g.port.healthy(), g.db.healthy())
        ok = bus_state == "ok" and db_state == "ok"
        body = HealthStatus(
            status="ok" if ok else "degraded", bus=bus_state, database=db_state,
            version=__version__, pid=os.getpid(),
        )  # fmt: skip
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())

    @app.get("/api/asyncapi.json")
    async def asyncapi() -> dict[str, Any]:
        """The AsyncAPI 3.0 document of the bus."""
        return asyncapi_document()

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(gw(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        built = DASHBOARD / "index.html"
        if built.is_file():
            return FileResponse(built, headers={"Cache-Control": "no-cache"})
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    if (DASHBOARD / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=DASHBOARD / "assets"), name="assets")

    @app.websocket("/api/live/ws/stream/{stream_id}")
    async def live(websocket: WebSocket, stream_id: str) -> None:
        g: Gateway = websocket.app.state.gw
        await websocket.accept()
        try:
            valid_stream_id(stream_id)
        except ApiError as exc:
            await websocket.send_text(envelope(WsError(error=exc.message, field="stream_id")))
            await websocket.close(code=1008)
            return
        g.ws_clients.inc()
        try:
            await LiveSession(g, websocket, stream_id).run()
        finally:
            g.ws_clients.dec()

    return app


class SkippedUpdates(Collector):
    """``vertac_websocket_skipped_total``: updates slow viewers skipped, counted as they happen."""

    def __init__(self, hub: FeedHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("vertac_websocket_skipped", "Updates a slow viewer skipped",
                                  value=self.hub.skipped)  # fmt: skip


class LiveSession:
    """One viewer's WebSocket: its stream's feed out (shared with every viewer of the stream),
    commands in."""

    def __init__(self, g: Gateway, websocket: WebSocket, stream_id: str) -> None:
        self.g = g
        self.ws = websocket
        self.stream_id = stream_id
        prepared = websocket.scope.get("extensions", {}).get(EXTENSION)
        self.viewer = Viewer(g.settings.ws_queue, prepared["writer"] if prepared else None)

    async def _send(self) -> None:
        while True:
            await self.ws.send_text(await self.viewer.outbox.get())

    async def _receive(self) -> None:
        while True:
            text = await self.ws.receive_text()
            try:
                command = parse_command(text)
            except CommandError as exc:
                self.viewer.offer(envelope(WsError(error=exc.message, field=exc.field)))
                continue
            if command.type == "ping":
                self.viewer.offer(envelope(WsPong(ts=time.time())))
                continue
            try:
                seq = await self.g.command(
                    self.stream_id, command.type, "websocket", command.reason
                )
            except nats.errors.Error as exc:
                self.viewer.offer(envelope(WsError(error=f"bus unavailable: {exc}")))
                continue
            self.viewer.offer(envelope(WsCommandAck(command=command.type, stream_seq=seq)))

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            # the feed is subscribed once this returns: tell the viewer to read its state
            await self.g.hub.join(self.stream_id, self.viewer)
            self.viewer.offer(envelope(WsReady(stream_id=self.stream_id)))
            tasks = [asyncio.create_task(self._receive())]
            if self.viewer.writer is None:  # else the feed writes updates to the socket itself
                tasks.append(asyncio.create_task(self._send()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                    log.warning("websocket closed on error", extra={"error": repr(exc)})
        finally:
            for task in tasks:
                task.cancel()
            await self.g.hub.leave(self.stream_id, self.viewer)


async def preflight(common: CommonSettings) -> None:
    """Fail (or wait, with startup_retry) before serving when the bus or database is down."""
    bus = await open_bus(common, f"vertac-{SERVICE}-preflight")
    await bus.close()
    pool = await open_pool(common.database_url, retry=common.startup_retry, name="preflight")
    await pool.close()


def listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """The gateway's listening socket. ``shared``: other gateway processes bind it too
    (SO_REUSEPORT) and the kernel spreads new connections over them; otherwise a port in use is
    an error, as it should be for a single gateway."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: FastAPI, **options: Any) -> uvicorn.Config:
    """uvicorn settings of the gateway: its own WebSocket protocol (prepared frames for the
    fan-out), no logging set-up of uvicorn's own."""
    return uvicorn.Config(app, log_config=None, ws=FanoutWebSocketProtocol, **options)


def serve_one() -> None:
    """One gateway process on the shared port."""
    settings, common = Settings(), CommonSettings()
    logs.setup(SERVICE, common.log_level, common.log_json)
    config = uvicorn_config(build_app(settings, common), lifespan="on", backlog=2048)
    try:
        sock = listening_socket(settings.host, settings.port, shared=settings.workers > 1)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        sys.stderr.write(
            f"vertac {SERVICE}: cannot listen on {where}: {exc.strerror} "
            "(VERTAC_GATEWAY_HOST, VERTAC_GATEWAY_PORT)\n"
        )
        sys.exit(EXIT_UNREACHABLE)
    uvicorn.Server(config).run(sockets=[sock])


def supervise_workers(count: int) -> None:
    """``count`` gateway processes on one port; a worker that dies is started again, Ctrl-C or
    SIGTERM stops them all."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=serve_one, name=f"gateway-{i}") for i in range(count)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.start()
    log.info("gateway workers started", extra={"workers": count})
    while not stopping:
        for i, w in enumerate(workers):
            if not w.is_alive() and not stopping:
                log.warning("gateway worker exited; starting it again",
                            extra={"worker": i, "exitcode": w.exitcode})  # fmt: skip
                workers[i] = ctx.Process(target=serve_one, name=f"gateway-{i}")
                workers[i].start()
        time.sleep(0.5)
    for w in workers:
        if w.is_alive():
            w.terminate()
    for w in workers:
        w.join(15)


def main() -> None:
    settings, common = Settings(), CommonSettings()
    logs.setup(SERVICE, common.log_level, common.log_json)
    try:
        asyncio.run(preflight(common))
    except ServerUnreachable as exc:
        sys.stderr.write(f"vertac {SERVICE}: {exc}\n")
        sys.exit(EXIT_UNREACHABLE)
    if settings.workers > 1:
        supervise_workers(settings.workers)
    else:
        serve_one()
