"""The registry service: answers ``vertac.register.<stream_id>`` (queue group ``ingest``).

An edge may send frames and this request, nothing else: it cannot write a bucket, so it cannot
spoof another stream or leave a record no one can read. The stream is the subject's (an edge's
bus user may publish to its own subject only); the registration is validated here, then written
to ``vertac_streams`` and announced on ``vertac.registry.<stream_id>``. Frame numbers are drawn
from ``vertac_seq`` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from edge.client import describe, is_transient
from edge.registry_client import register, release_seq, reserve_seq
from schemas import subjects
from schemas.messages import RegistryReply, RegistryRequest
from services.common.responder import STATUS_HEADER

log = logging.getLogger(__name__)


class Refused(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class RegistryResponder:
    """Carries out registry requests; one reply for each, whatever happens."""

    def __init__(self, js: JetStreamContext, streams: KeyValue, seq: KeyValue) -> None:
        self.js = js
        self.streams = streams
        self.seq = seq

    async def answer(self, stream_id: str, data: bytes) -> RegistryReply:
        try:
            return await self._carry_out(stream_id, RegistryRequest.model_validate_json(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            return self._refused(stream_id, 422, f"{where}: {err.get('msg', 'invalid')}")
        except Refused as exc:
            return self._refused(stream_id, exc.status, str(exc))
        except Exception as exc:  # every request is answered; a bus outage asks for a retry
            if not is_transient(exc):
                log.exception("registry request failed", extra={"stream_id": stream_id})
                return RegistryReply(status=500, error=describe(exc), server_time_ns=time.time_ns())
            return RegistryReply(status=503, error=describe(exc), server_time_ns=time.time_ns())

    @staticmethod
    def _refused(stream_id: str, status: int, reason: str) -> RegistryReply:
        log.warning("registry request refused", extra={"stream_id": stream_id, "reason": reason})
        return RegistryReply(status=status, error=reason, server_time_ns=time.time_ns())

    async def _carry_out(self, stream_id: str, req: RegistryRequest) -> RegistryReply:
        reply = RegistryReply(status=200, server_time_ns=time.time_ns())
        if req.op == "clock":
            return reply
        if req.op == "register":
            if req.registration is None:
                raise Refused(422, "registration: required for op register")
            if req.registration.stream_id not in (None, stream_id):
                raise Refused(
                    403,
                    f"registration.stream_id: {req.registration.stream_id!r} is not this "
                    f"subject's stream {stream_id!r}",
                )
            registration = req.registration.model_copy(update={"stream_id": stream_id})
            record, existed = await register(self.js, self.streams, registration)
            reply = reply.model_copy(update={"registered": record, "existed": existed})
            if req.count:
                first = await reserve_seq(self.seq, stream_id, req.count)
                reply = reply.model_copy(update={"first_seq": first})
            return reply
        if req.op == "reserve":
            if req.count < 1:
                raise Refused(422, "count: must be at least 1 for op reserve")
            first = await reserve_seq(self.seq, stream_id, req.count)
            return reply.model_copy(update={"first_seq": first})
        if req.reserved_end is None or req.next_seq is None:
            raise Refused(422, "reserved_end, next_seq: both required for op release")
        released = await release_seq(self.seq, stream_id, req.reserved_end, req.next_seq)
        return reply.model_copy(update={"released": released})

    async def serve(self, nc: Client, stop: asyncio.Event) -> None:
        """Answer requests until ``stop`` is set (replicas share them in a queue group)."""

        async def on_request(msg: Msg) -> None:
            try:
                stream_id = subjects.check_stream_id(msg.subject.split(".", 2)[2])
            except (IndexError, subjects.InvalidStreamId) as exc:
                reply = self._refused(msg.subject, 400, str(exc))
            else:
                reply = await self.answer(stream_id, msg.data)
            if msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await nc.publish(
                        msg.reply,
                        reply.model_dump_json(exclude_none=True).encode(),
                        headers={STATUS_HEADER: str(reply.status)},
                    )

        sub: Subscription = await nc.subscribe(
            subjects.register_requests(), queue="ingest", cb=on_request
        )
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
