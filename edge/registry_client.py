"""The stream registry as a client sees it: register a stream, reserve and release frame numbers,
look a stream up, read the server's clock (request-reply to the ingest service, KV reads)."""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from datetime import UTC, datetime

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from edge.client import Bus
from schemas import subjects
from schemas.messages import (
    RegistryReply,
    RegistryRequest,
    StreamRegistered,
    StreamRegistration,
)

log = logging.getLogger(__name__)


async def reserve_seq(kv: KeyValue, stream_id: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive sequence numbers of ``stream_id``; returns the first."""
    if count < 1:
        raise ValueError("count must be >= 1")
    for attempt in range(100):
        try:
            entry = await kv.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            try:
                await kv.create(stream_id, str(count).encode())
            except KeyWrongLastSequenceError:
                continue
            return 0
        current = int(entry.value or b"0")
        try:
            await kv.update(stream_id, str(current + count).encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(0.001 * attempt)
            continue
        return current
    raise RuntimeError(f"could not reserve a sequence number for {stream_id}: too much contention")


async def release_seq(kv: KeyValue, stream_id: str, reserved_end: int, next_seq: int) -> bool:
    """Give back the unused tail ``next_seq..reserved_end`` of a reservation, if nobody reserved
    after it, so a cleanly stopped publisher leaves no gap in ``seq``. Returns True if released."""
    if next_seq >= reserved_end:
        return False
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return False
    if int(entry.value or b"0") != reserved_end:
        return False
    try:
        await kv.update(stream_id, str(next_seq).encode(), last=entry.revision)
    except KeyWrongLastSequenceError:
        return False
    return True


async def lookup(kv: KeyValue, stream_id: str) -> StreamRegistered | None:
    """The registration of ``stream_id``, or None: also for a record that is not a valid
    registration of this stream, which is logged (a bad record reads as none, and the next
    registration replaces it)."""
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    try:
        record = StreamRegistered.model_validate_json(entry.value)
    except ValidationError as exc:
        reason = f"not a valid registration: {exc.errors()[0].get('msg', '')}"
    else:
        if record.stream_id == stream_id:
            return record
        reason = f"names stream {record.stream_id!r}"
    log.warning(
        "skipping a malformed registration",
        extra={"bucket": subjects.KV_STREAMS, "key": stream_id, "reason": reason},
    )
    return None


def derive_stream_id(device_name: str) -> str:
    """A stream id made from a device name: 'Press 1 / Line A' -> 'press-1-line-a'."""
    # letters with accents keep their base letter: 'Prüfstand' -> 'prufstand'
    ascii_name = unicodedata.normalize("NFKD", device_name).encode("ascii", "ignore").decode()
    cleaned = "".join(c.lower() if c.isalnum() else "-" for c in ascii_name)
    token = "-".join(part for part in cleaned.split("-") if part)[:64]
    return subjects.check_stream_id(token or "stream")


async def register(
    js: JetStreamContext, kv: KeyValue, registration: StreamRegistration
) -> tuple[StreamRegistered, bool]:
    """Store and announce a registration; returns it and whether the stream existed before."""
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    before = await lookup(kv, stream_id)
    existed = before is not None
    dataset_id = registration.dataset_id or (before.dataset_id if before else "")
    record = StreamRegistered(
        stream_id=stream_id,
        device_name=registration.device_name,
        description=registration.description,
        sensors=registration.sensors,
        registered_at=datetime.now(UTC),
        dataset_id=dataset_id or f"live-{stream_id}"[:64],
    )
    body = record.model_dump_json().encode()
    await kv.put(stream_id, body)
    await js.publish(
        subjects.registry(stream_id),
        body,
        headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
    )
    return record, existed


# --- the registry service (vertac.register.<stream_id>) -------------------------------------


class RegistryRefused(ValueError):
    """The registry service refused a request (4xx): not worth retrying as it is."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the registry refused the request ({status}): {reason}")
        self.status = status
        self.reason = reason


class RegistryBusy(ConnectionError):
    """The registry service could not answer now (503): retry."""


class NoRegistryService(ConnectionError):
    """No ingest service answers registry requests yet: waited out like an outage."""


def _no_registry_service(bus: Bus) -> None:
    """An edge never writes the registry itself: without the service it waits."""
    if bus.user.startswith("edge-"):
        raise NoRegistryService(
            "no ingest service answers vertac.register requests yet (it validates and "
            "writes registrations)"
        )


async def registry_call(
    bus: Bus, stream_id: str, request: RegistryRequest, wait_s: float = 10.0
) -> RegistryReply:
    """Ask the registry service (ingest) and return its reply; a refusal raises
    :class:`RegistryRefused`, a busy service :class:`RegistryBusy`, no service
    ``nats.errors.NoRespondersError``."""
    msg = await bus.nc.request(
        subjects.register_request(stream_id),
        request.model_dump_json(exclude_none=True).encode(),
        timeout=wait_s,
    )
    reply = RegistryReply.model_validate_json(msg.data)
    if reply.status >= 500:
        raise RegistryBusy(reply.error or f"status {reply.status}")
    if reply.status >= 400:
        raise RegistryRefused(reply.status, reply.error)
    return reply


async def register_stream(
    bus: Bus, registration: StreamRegistration, reserve: int = 0
) -> tuple[StreamRegistered, bool, int | None]:
    """Register a stream through the registry service, reserving ``reserve`` frame numbers:
    (record, whether it existed, first reserved number or None). Without a registry service
    on the bus (a bus with no ingest yet), a user who may write the registry (the admin)
    writes it directly; an edge cannot, and waits as through an outage."""
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    try:
        reply = await registry_call(
            bus, stream_id, RegistryRequest(op="register", registration=registration, count=reserve)
        )
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        record, existed = await register(
            bus.js, await bus.js.key_value(subjects.KV_STREAMS), registration
        )
        first = None
        if reserve:
            first = await reserve_seq(await bus.js.key_value(subjects.KV_SEQ), stream_id, reserve)
        return record, existed, first
    assert reply.registered is not None
    return reply.registered, reply.existed, reply.first_seq


async def reserve_frames(bus: Bus, stream_id: str, count: int) -> int:
    """Reserve ``count`` consecutive frame numbers of ``stream_id``; returns the first."""
    try:
        reply = await registry_call(bus, stream_id, RegistryRequest(op="reserve", count=count))
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        return await reserve_seq(await bus.js.key_value(subjects.KV_SEQ), stream_id, count)
    assert reply.first_seq is not None
    return reply.first_seq


async def release_frames(bus: Bus, stream_id: str, reserved_end: int, next_seq: int) -> bool:
    """Give back the unused tail of a reservation (see :func:`release_seq`)."""
    if next_seq >= reserved_end:
        return False
    request = RegistryRequest(op="release", reserved_end=reserved_end, next_seq=next_seq)
    try:
        return (await registry_call(bus, stream_id, request)).released
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        kv = await bus.js.key_value(subjects.KV_SEQ)
        return await release_seq(kv, stream_id, reserved_end, next_seq)


async def clock_offset_s(bus: Bus, stream_id: str, wait_s: float = 2.0) -> float:
    """How far this machine's clock is behind the server's, in seconds: the server's time
    against the middle of the round trip (positive: this clock is behind)."""
    sent_ns = time.time_ns()
    reply = await registry_call(bus, stream_id, RegistryRequest(op="clock"), wait_s)
    return (reply.server_time_ns - (sent_ns + time.time_ns()) // 2) / 1e9
