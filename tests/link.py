"""A TCP link that a test can cut and restore, between a site and central (a wide-area link)."""

from __future__ import annotations

import asyncio
import contextlib

from services.embedded import free_port


class Link:
    """Forwards ``127.0.0.1:<port>`` to ``target``. ``cut()`` drops every open connection and
    refuses new ones until ``restore()``, as a link that goes down does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self.pipes: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> Link:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.pipes |= {writer, up_writer}
        with contextlib.suppress(asyncio.CancelledError):  # the link closed under the pipes
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.up and (data := await reader.read(65536)):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.pipes.discard(writer)
            writer.close()

    def cut(self) -> None:
        self.up = False
        for writer in list(self.pipes):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.pipes.clear()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
