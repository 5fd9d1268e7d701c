"""Routes of alert rules and alerts."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    Query,
    Request,
)
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from schemas import subjects
from schemas.messages import (
    AcknowledgeAlert,
    AlertControlRequest,
    AlertRule,
    ErrorBody,
    RemoveAlertRule,
)
from services.gateway.auth import Admin, Operator, role
from services.gateway.bodies import OffLoopJson
from services.gateway.state import (
    ASKS_OWNER,
    AlertIdPath,
    ApiError,
    IsoTime,
    RuleIdPath,
    StreamIdPath,
    gw,
    valid_stream_id,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=OffLoopJson, tags=["alerts"], dependencies=[Depends(role("viewer"))])


@router.get("/api/live/stream/{stream_id}/alert-rules", response_model=list[AlertRule])
async def list_alert_rules(stream_id: StreamIdPath, request: Request) -> list[AlertRule]:
    """The stream's alert rules."""
    return await gw(request).rules.of_stream(valid_stream_id(stream_id))


@router.put(
    "/api/live/stream/{stream_id}/alert-rules/{rule_id}",
    response_model=AlertRule,
    responses=ASKS_OWNER,
)
async def put_alert_rule(
    stream_id: StreamIdPath,
    rule_id: RuleIdPath,
    body: dict[str, Any],
    request: Request,
    who: Admin,
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
    before = next((r for r in await g.rules.of_stream(stream_id) if r.rule_id == rule_id), None)
    subject = subjects.alert_control(stream_id, "rule_put")
    kept = await g.ask("alerts", subject, rule.model_dump_json().encode(), fields="body.")
    await g.audit.record(who, "alert_rule.put", f"{stream_id}/{rule_id}", before, rule)
    return AlertRule.model_validate_json(kept)


@router.delete(
    "/api/live/stream/{stream_id}/alert-rules/{rule_id}", status_code=204, responses=ASKS_OWNER
)
async def delete_alert_rule(
    stream_id: StreamIdPath, rule_id: RuleIdPath, request: Request, who: Admin
) -> Response:
    """Remove a rule."""
    g = gw(request)
    before = next(
        (r for r in await g.rules.of_stream(valid_stream_id(stream_id)) if r.rule_id == rule_id),
        None,
    )
    removal = RemoveAlertRule(rule_id=rule_id).model_dump_json().encode()
    await g.ask("alerts", subjects.alert_control(stream_id, "rule_delete"), removal)
    await g.audit.record(who, "alert_rule.delete", f"{stream_id}/{rule_id}", before, None)
    return Response(status_code=204)


@router.get("/api/live/alerts")
async def list_alerts(
    request: Request,
    stream_id: Annotated[str | None, Query(pattern=subjects.ANY_STREAM_ID_PATTERN)] = None,
    state: Annotated[str | None, Query(pattern="^(raised|acknowledged|cleared)$")] = None,
    severity: Annotated[str | None, Query(pattern="^(info|warning|critical)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: IsoTime | None = None,
    until: IsoTime | None = None,
) -> list[dict[str, Any]]:
    """Alerts, newest first, filtered by stream, state and severity; with ``since`` and
    ``until`` (ISO times) only alerts active at some moment in between, e.g. during a cycle."""
    return await gw(request).alerts.find(stream_id, state, severity, limit, since, until)


@router.get("/api/live/alerts/{alert_id}/history")
async def alert_history(alert_id: AlertIdPath, request: Request) -> list[dict[str, Any]]:
    """Every transition of one alert."""
    rows = await gw(request).alerts.history(alert_id)
    if not rows:
        raise ApiError(404, f"alert {alert_id!r} is unknown", "alert_id")
    return rows


@router.post(
    "/api/live/alerts/{alert_id}/ack",
    responses={
        202: {"description": "At a central VerTac, a site's alert: the acknowledgement was "
              "sent to the site, whose acknowledged event comes back to central."},
        409: {"model": ErrorBody, "description": "The alert is already acknowledged, or no "
              "longer the rule's current one."},
        **ASKS_OWNER,
    },
)  # fmt: skip
async def ack_alert(
    alert_id: AlertIdPath, body: AcknowledgeAlert, request: Request, who: Operator
) -> Response:
    """Acknowledge an alert, with why. The signed-in name is recorded as who acknowledged
    (``user`` of the body only counts with auth off, where it is required)."""
    user = body.user if who.via == "anonymous" else who.name
    if not user:
        raise ApiError(422, "say who acknowledges (auth is off)", "body.user")
    after = {"user": user, "comment": body.comment}
    parts = alert_id.split(".")  # <stream>.<rule>.<n>, or at central <site>.<stream>.<rule>.<n>
    if len(parts) == 4:  # a site's alert: the site acknowledges it, and its event comes back
        site, local = parts[0], ".".join(parts[1:])
        if site not in gw(request).sites:
            raise ApiError(
                404, f"alert {alert_id!r} is unknown (no site {site!r} here)", "alert_id"
            )
        payload = AlertControlRequest(alert_id=local, user=user, comment=body.comment)
        try:
            subject = subjects.site_alert_ack(site, valid_stream_id(parts[1], "alert_id"))
        except ValueError as exc:
            raise ApiError(422, str(exc), "alert_id") from exc
        await gw(request).port.publish_to_site(subject, payload.model_dump_json().encode())
        await gw(request).audit.record(who, "alert.ack", alert_id, None, {**after, "site": site})
        return JSONResponse(
            status_code=202, content={"alert_id": alert_id, "state": "sent", "site": site}
        )
    payload = AlertControlRequest(alert_id=alert_id, user=user, comment=body.comment)
    subject = subjects.alert_control(valid_stream_id(parts[0], "alert_id"), "ack")
    answer = await gw(request).ask("alerts", subject, payload.model_dump_json().encode())
    await gw(request).audit.record(who, "alert.ack", alert_id, None, after)
    return Response(answer, media_type="application/json")
