"""Routes that bring samples in: registration and batches (an edge for its streams, or admin)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Annotated

import nats.errors
from fastapi import (
    APIRouter,
    Body,
    Depends,
    Request,
)

from edge.client import until_answered
from edge.registry_client import (
    RegistryBusy,
    RegistryRefused,
    derive_stream_id,
    lookup,
    registry_call,
    reserve_seq,
)
from schemas import subjects
from schemas.compat import (
    BATCH_EXAMPLES,
    REGISTER_EXAMPLES,
    BatchBody,
    LegacyBatch,
    LegacyRegistration,
    RegisterBody,
)
from schemas.frames import FrameError
from schemas.messages import (
    BatchAccepted,
    BufferStatus,
    RegisterResponse,
    RegistryReply,
    RegistryRequest,
)
from services.gateway.auth import Edge, may_write, role
from services.gateway.bodies import OffLoopJson
from services.gateway.logic import (
    BadTimestamp,
    UnknownSensor,
    batch_to_frame,
    legacy_batch,
    split_batch,
)
from services.gateway.state import (
    FRAME_SAMPLES,
    SERVICE,
    ApiError,
    gw,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=OffLoopJson, tags=["ingest"], dependencies=[Depends(role("edge"))])


async def ask_registry(request: Request, stream_id: str, body: RegistryRequest) -> RegistryReply:
    """A request to the stream registry, which the ingest service keeps (and alone writes); a
    refusal comes back as the same error, a missing or busy registry as 503."""
    g = gw(request)
    try:
        return await until_answered(
            lambda: registry_call(g.port.bus, stream_id, body), retry=(RegistryBusy,)
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        raise ApiError(
            503, "the ingest service (it keeps the stream registry) is not running; start it "
            "and retry",
        ) from exc  # fmt: skip
    except RegistryBusy as exc:
        raise ApiError(503, f"the stream registry is busy: {exc}; retry") from exc
    except RegistryRefused as exc:
        raise ApiError(exc.status, exc.reason, "body") from exc


@router.post("/api/live/register", status_code=201, response_model=RegisterResponse)
async def register_stream(
    body: Annotated[RegisterBody, Body(openapi_examples=REGISTER_EXAMPLES)],
    request: Request,
    who: Edge,
) -> RegisterResponse:
    """Register a machine and its sensors (idempotent: registering again updates it). Takes
    today's body (``sensors: [{id, name, type, unit, rate_hz}]``) or VerTac v0.2.0's
    (``sensor_count``, ``sensors: [{sensor_id, name, type, unit}]``, no stream id)."""
    g = gw(request)
    registration = body.current() if isinstance(body, LegacyRegistration) else body
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    may_write(who, stream_id)
    before = await lookup(g.port.kv_streams, stream_id)
    reply = await ask_registry(
        request, stream_id, RegistryRequest(op="register", registration=registration)
    )
    assert reply.registered is not None
    record, existed = reply.registered, reply.existed
    if (
        before is None
        or before.sensors != record.sensors
        or before.device_name != record.device_name
    ):
        await g.audit.record(who, "stream.register", record.stream_id, before, record)
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


@router.post("/api/live/batch", response_model=BatchAccepted)
async def post_batch(
    raw: Annotated[BatchBody, Body(openapi_examples=BATCH_EXAMPLES)],
    request: Request,
    who: Edge,
) -> BatchAccepted:
    """Accept samples as JSON; answers only after JetStream stored them as one frame. Takes
    today's columnar body (``samples: [{timestamp, values: {sensor: value}}]``) or VerTac
    v0.2.0's (one record per sample: ``timestamp, sensor_id | sensor_name, value, unit,
    quality`` 0-1)."""
    g = gw(request)
    may_write(who, raw.stream_id)
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
    # frame numbers straight from the shared sequence bucket (compare-and-set, one reservation
    # for the whole batch): asking ingest's registry instead costs each batch a round trip
    # behind ingest's own work
    first_seq = await reserve_seq(g.port.kv_seq, body.stream_id, len(parts))
    for k, frame in enumerate(parts):
        seq = first_seq + k
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
