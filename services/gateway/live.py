"""The live WebSocket: a stream's feed out (shared by its viewers), cycle commands in."""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
from fastapi import (
    APIRouter,
    WebSocket,
    WebSocketDisconnect,
)

from schemas.messages import (
    WsCommandAck,
    WsError,
    WsPong,
    WsReady,
)
from services.common.auth import Principal
from services.gateway.auth import Authenticator, credential_of
from services.gateway.fanout import Viewer
from services.gateway.logic import (
    CommandError,
    envelope,
    parse_command,
)
from services.gateway.state import (
    ApiError,
    Gateway,
    shown_stream_id,
)
from services.gateway.wsproto import EXTENSION

log = logging.getLogger(__name__)
router = APIRouter()


@router.websocket("/api/live/ws/stream/{stream_id}")
async def live(websocket: WebSocket, stream_id: str) -> None:
    g: Gateway = websocket.app.state.gw
    auth: Authenticator = websocket.app.state.auth
    await websocket.accept()
    try:
        who = await auth.principal(credential_of(websocket, query=True))
        if not who.allows("viewer"):
            raise ApiError(403, f"this needs role viewer; {who.name!r} has role {who.role}")
        shown_stream_id(stream_id)  # at central, a site's stream is shown live too
        g.site_of(stream_id)
    except ApiError as exc:
        await websocket.send_text(envelope(WsError(error=exc.message, field=exc.field)))
        await websocket.close(code=1008)
        return
    g.ws_clients.inc()
    try:
        await LiveSession(g, websocket, stream_id, who).run()
    finally:
        g.ws_clients.dec()


class LiveSession:
    """One viewer's WebSocket: its stream's feed out (shared with every viewer of the stream),
    commands in."""

    def __init__(self, g: Gateway, websocket: WebSocket, stream_id: str, who: Principal) -> None:
        self.g = g
        self.who = who
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
            if not self.who.allows("operator"):
                refused = (
                    f"{command.type} needs role operator; {self.who.name!r} has {self.who.role}"
                )
                self.viewer.offer(envelope(WsError(error=refused, field="type")))
                continue
            try:
                seq = await self.g.command(
                    self.who, self.stream_id, command.type, "websocket", command.reason
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
