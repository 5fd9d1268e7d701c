"""What the gateway's routes share: adapters (:class:`Gateway`), errors, typed parameters."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import nats.errors
from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import AfterValidator, BeforeValidator

from edge.registry_client import lookup
from schemas import subjects
from schemas.frames import Frame
from schemas.messages import (
    CycleAlerts,
    CycleCommand,
    CycleDetail,
    ErrorBody,
    ErrorDetail,
    StreamRegistered,
)
from schemas.v1.alerts import RULE_ID_PATTERN
from schemas.v1.base import ALERT_ID_PATTERN, CYCLE_ID_PATTERN
from services.common.auth import AuditLog, Principal, TokenStore
from services.common.metrics import Metrics
from services.gateway.adapters import (
    AlertQueries,
    AlertRulesKv,
    BusPort,
    CycleQueries,
    Database,
    Datasets,
)
from services.gateway.config import Settings
from services.gateway.fanout import FeedHub
from services.gateway.history import HistoryQueries
from services.gateway.logic import (
    group_alerts,
)

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
_STREAM_ID_DOC = "Stream id (at a central VerTac, a site's stream is `<site>.<stream id>`)."
StreamIdPath = Annotated[
    str, PathParam(pattern=subjects.ANY_STREAM_ID_PATTERN, description=_STREAM_ID_DOC)
]
StreamIdQuery = Annotated[
    str, Query(pattern=subjects.ANY_STREAM_ID_PATTERN, description=_STREAM_ID_DOC)
]
CycleIdPath = Annotated[str, PathParam(pattern=CYCLE_ID_PATTERN, description="Cycle id.")]
RuleIdPath = Annotated[str, PathParam(pattern=RULE_ID_PATTERN, description="Rule id.")]
AlertIdPath = Annotated[str, PathParam(pattern=ALERT_ID_PATTERN, description="Alert id.")]
DatasetPath = Annotated[str, PathParam(pattern=DATASET_NAME, description="Dataset name.")]
VersionPath = Annotated[
    int, PathParam(ge=1, le=INT4_MAX, description="Reference version (1, 2, ...).")
]
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _iso_only(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("an ISO 8601 time is needed, e.g. 2026-12-01T08:00:00Z")
    return value


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 4, 11, tzinfo=UTC)  # int64 nanoseconds since 1970 end on 2262-04-11


def _in_range(value: datetime) -> datetime:
    """A query time within what is stored (ns since 1970 in 64 bits): an earlier one reads as
    1970-01-01, a later one as 2262-04-11 ("until forever")."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return min(max(aware, EARLIEST), LATEST)


IsoTime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_in_range)]
REPORT_POINTS = 800  # points per sensor in the report's charts (dashboard and PDF alike)
log = logging.getLogger(__name__)


def error(status: int, message: str, field: str = "") -> JSONResponse:
    details = [ErrorDetail(field=field, message=message)] if field else []
    body = ErrorBody(error=message, details=details)
    return JSONResponse(status_code=status, content=body.model_dump())


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, field: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.headers = headers or {}


def _utc(moment: datetime) -> datetime:
    """A query's time; one without a zone is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def valid_stream_id(stream_id: str, field: str = "stream_id") -> str:
    try:
        return subjects.check_stream_id(stream_id)
    except subjects.InvalidStreamId as exc:
        status = 409 if isinstance(exc, subjects.SiteStream) else 422
        raise ApiError(status, str(exc), field) from exc


def shown_stream_id(stream_id: str, field: str = "stream_id") -> str:
    """A stream that can be shown: a local one, or at central a site's (``<site>.<id>``)."""
    try:
        return subjects.check_any_stream_id(stream_id)
    except subjects.InvalidStreamId as exc:
        raise ApiError(422, str(exc), field) from exc


ASKS_OWNER: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The service that owns it is not running."},
    504: {"model": ErrorBody, "description": "The service that owns it did not answer in time."},
}
"""The responses of a route that asks the owning service to make a change."""


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
        audit: AuditLog,
        tokens: TokenStore,
    ) -> None:
        self.settings = settings
        self.sites: tuple[str, ...] = ()  # at a central VerTac: its sites
        self.port = port
        self.db = db
        self.cycles = cycles
        self.alerts = alerts
        self.rules = rules
        self.metrics = metrics
        self.datasets = datasets
        self.history = history
        self.audit = audit
        self.tokens = tokens
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

    def site_of(self, stream_id: str) -> str | None:
        """The site of a site's stream at this central VerTac (None for a local stream); 404
        for a site this VerTac does not take."""
        site = subjects.site_of(stream_id)
        if site is None:
            return None
        if site[0] not in self.sites:
            raise ApiError(
                404, f"stream {stream_id!r} is unknown (no site {site[0]!r} here)", "stream_id"
            )
        return site[0]

    async def recorded(self, cycle_id: str) -> tuple[CycleDetail, Frame]:
        """The cycle and its recorded samples; 409 while it has none (still running)."""
        detail, name = await self.cycle(cycle_id)
        frame = await self.port.recording(name) if name else None
        site = subjects.site_of(detail.cycle.stream_id)
        if frame is None and site is not None:
            raise ApiError(
                409,
                f"cycle {cycle_id!r} is site {site[0]!r}'s: its recording is kept at the site "
                f"(central has its samples in the history of {detail.cycle.stream_id!r})",
                "cycle_id",
            )
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

    async def ask(
        self, service: str, subject: str, body: bytes, timeout_s: float = 30, fields: str = ""
    ) -> bytes:
        """A request to the service that owns what it changes: the answer's body, or its
        refusal as the same error (a refused field prefixed with ``fields``, e.g. ``body.``);
        503 while the service is not running, 504 when it does not answer in time."""
        try:
            status, data = await self.port.request(subject, body, timeout_s)
        except nats.errors.NoRespondersError as exc:
            raise ApiError(
                503, f"the {service} service is not running; start it and retry"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise ApiError(504, f"the {service} service did not answer in time") from exc
        if status >= 400:
            try:
                refused = ErrorBody.model_validate_json(data)
            except ValueError:
                raise ApiError(status, data.decode(errors="replace")) from None
            field = refused.details[0].field if refused.details else ""
            if field and field != "stream_id":
                field = f"{fields}{field}"
            raise ApiError(status, refused.error, field)
        return data

    async def registered(self, stream_id: str) -> StreamRegistered:
        record = await lookup(self.port.kv_streams, stream_id)
        if record is None:
            raise ApiError(
                404,
                f"stream {stream_id!r} is not registered; POST /api/live/register first",
                "stream_id",
            )
        return record

    async def command(
        self, who: Principal, stream_id: str, command: str, source: str, reason: str = ""
    ) -> int:
        cmd = CycleCommand(
            stream_id=stream_id,
            command=command,
            issued_at=datetime.now(UTC),
            source=source,
            reason=reason,
        )
        ack = await self.port.publish_command(cmd)
        self.metrics.messages_out.labels(SERVICE, "control").inc()
        after = {"stream_seq": int(ack.seq), "via": source, "reason": reason}
        await self.audit.record(
            who, f"cycle.{command.removeprefix('cycle_')}", stream_id, None, after
        )
        return int(ack.seq)


def gw(request: Request) -> Gateway:
    g: Gateway = request.app.state.gw
    return g


class SkippedUpdates(Collector):
    """``vertac_websocket_skipped_total``: updates slow viewers skipped, counted as they happen."""

    def __init__(self, hub: FeedHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("vertac_websocket_skipped", "Updates a slow viewer skipped",
                                  value=self.hub.skipped)  # fmt: skip
