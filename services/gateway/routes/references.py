"""Routes of reference (golden) cycles, answered by the analysis service over the bus."""

from __future__ import annotations

import json
import logging

import nats.errors
from fastapi import (
    APIRouter,
    Depends,
    Request,
)
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from schemas import subjects
from schemas.messages import (
    ActivateReference,
    CreateReference,
    DryRunBody,
    DryRunReference,
    DryRunResult,
    ListReferences,
    NewReferenceBody,
    ReferenceInfo,
)
from services.common.auth import Principal
from services.gateway.auth import Admin, Operator, role
from services.gateway.bodies import OffLoopJson
from services.gateway.state import (
    ApiError,
    StreamIdPath,
    VersionPath,
    error,
    gw,
    valid_stream_id,
)

log = logging.getLogger(__name__)
router = APIRouter(
    route_class=OffLoopJson, tags=["references"], dependencies=[Depends(role("viewer"))]
)


async def ask_analysis(stream_id: StreamIdPath, op: str, body: bytes, request: Request) -> Response:
    try:
        status, data = await gw(request).port.reference_request(stream_id, op, body)
    except nats.errors.NoRespondersError:
        return error(503, "the analysis service is not running; start it and retry")
    except nats.errors.TimeoutError:
        return error(504, "the analysis service did not answer in time")
    return Response(data, status_code=status, media_type="application/json")


@router.get("/api/live/stream/{stream_id}/references", response_model=list[ReferenceInfo])
async def list_references(stream_id: StreamIdPath, request: Request) -> Response:
    """Every reference version of a stream."""
    body = ListReferences(stream_id=valid_stream_id(stream_id)).model_dump_json().encode()
    return await ask_analysis(stream_id, "list", body, request)


@router.get(
    "/api/live/stream/{stream_id}/references/{version:int}", response_model=list[ReferenceInfo]
)
async def get_reference(
    stream_id: StreamIdPath, version: VersionPath, request: Request
) -> Response:
    """One reference version with its mean curves and envelopes."""
    req = ListReferences(stream_id=valid_stream_id(stream_id), reference_version=version)
    return await ask_analysis(stream_id, "get", req.model_dump_json().encode(), request)


@router.post(
    "/api/live/stream/{stream_id}/references",
    status_code=201,
    response_model=ReferenceInfo,
    responses={
        202: {"description": "At a central VerTac, a site's stream: sent to the site, which "
              "makes the reference from its cycles."}
    },
)  # fmt: skip
async def create_reference(
    stream_id: StreamIdPath, body: NewReferenceBody, request: Request, who: Admin
) -> Response:
    """A new reference version from one or more good cycles (DTW barycenter + envelope). At a
    central VerTac, for a site's stream: sent to the site, which makes it from its cycles (202);
    the site's next analyses use it."""
    site = subjects.site_of(stream_id)
    if site is not None:
        return await push_reference(request, who, stream_id, site, body)
    req = CreateReference(stream_id=valid_stream_id(stream_id), **body.model_dump())
    answer = await ask_analysis(stream_id, "create", req.model_dump_json().encode(), request)
    if answer.status_code == 200:
        answer.status_code = 201
        made = json.loads(bytes(answer.body))
        after = {
            k: made.get(k) for k in ("reference_version", "source_cycles", "active", "description")
        }
        await gw(request).audit.record(who, "reference.create", stream_id, None, after)
    return answer


async def push_reference(
    request: Request, who: Principal, stream_id: str, site: tuple[str, str], body: NewReferenceBody
) -> Response:
    g = gw(request)
    name, local = site
    if name not in g.sites:
        raise ApiError(404, f"stream {stream_id!r} is unknown (no site {name!r} here)", "stream_id")
    if body.dataset:
        raise ApiError(422, "a site's reference is made from its cycles: give cycle_ids", "body")
    theirs = f"{name}."
    foreign = [c for c in body.cycle_ids if not c.startswith(f"{stream_id}-")]
    if foreign:
        raise ApiError(422, f"{foreign[0]!r} is not a cycle of {stream_id!r}", "body.cycle_ids")
    req = CreateReference(
        stream_id=local,
        cycle_ids=[c.removeprefix(theirs) for c in body.cycle_ids],
        activate=body.activate,
        description=body.description,
    )
    await g.port.publish_to_site(
        subjects.site_reference_push(name, local), req.model_dump_json().encode()
    )
    after = {"site": name, "source_cycles": body.cycle_ids}
    await g.audit.record(who, "reference.create", stream_id, None, after)
    return JSONResponse(
        status_code=202, content={"stream_id": stream_id, "state": "sent", "site": name}
    )


@router.post(
    "/api/live/stream/{stream_id}/references/{version:int}/activate", response_model=ReferenceInfo
)
async def activate_reference(
    stream_id: StreamIdPath, version: VersionPath, request: Request, who: Admin
) -> Response:
    """Make a reference version the one new cycles are compared with."""
    req = ActivateReference(stream_id=valid_stream_id(stream_id), reference_version=version)
    answer = await ask_analysis(stream_id, "activate", req.model_dump_json().encode(), request)
    if answer.status_code == 200:
        after = {"reference_version": version}
        await gw(request).audit.record(who, "reference.activate", stream_id, None, after)
    return answer


@router.post("/api/live/stream/{stream_id}/references/dry-run", response_model=DryRunResult)
async def dry_run_reference(
    stream_id: StreamIdPath, body: DryRunBody, request: Request, who: Operator
) -> Response:
    """Scores and alert count a candidate reference would have given the last cycles."""
    try:
        req = DryRunReference(stream_id=valid_stream_id(stream_id), **body.model_dump())
    except ValidationError as exc:
        raise ApiError(422, exc.errors()[0]["msg"], "body") from exc
    return await ask_analysis(stream_id, "dry_run", req.model_dump_json().encode(), request)
