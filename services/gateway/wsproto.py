"""The gateway's WebSocket protocol: uvicorn's, plus one door for prepared frames.

An update fanned out to thousands of viewers is the same message for all of them. Server frames
are not masked, so the whole WebSocket frame (header and payload) is built once and the same bytes
are written to every viewer's socket: no per-viewer task, ASGI message or frame encoding. A viewer
whose socket buffer already holds more than its share is skipped, so a slow viewer costs neither
memory nor the others' latency.

The door is an ASGI scope extension, ``vertac.prepared_frames``, holding a :class:`FrameWriter`.
Under another server the extension is absent and the gateway falls back to ordinary ASGI sends.
Frames sent this way are never compressed (RSV1 clear), which RFC 7692 allows on a connection that
negotiated permessage-deflate.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

EXTENSION = "vertac.prepared_frames"


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class FrameWriter:
    """Writes prepared frames straight to one connection's transport."""

    __slots__ = ("_proto",)

    def __init__(self, proto: WebSocketsSansIOProtocol) -> None:
        self._proto = proto

    @property
    def open(self) -> bool:
        p = self._proto
        return (
            p.handshake_complete
            and not p.close_sent
            and not p.disconnected
            and not p.transport.is_closing()
        )

    def write(self, frame: bytes, limit: int) -> bool:
        """Write ``frame`` unless the connection is closing or its send buffer holds more than
        ``limit`` bytes; False when it was not written."""
        p = self._proto
        if not self.open or not p.writable.is_set():
            return False
        if p.transport.get_write_buffer_size() > limit:
            return False
        p.transport.write(frame)
        return True


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the prepared-frame extension in its scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted; the ASGI task has not run yet
            scope["extensions"][EXTENSION] = {"writer": FrameWriter(self)}
