"""What every source shares: samples column-wise, a queue that turns callbacks into batches,
and quiet client libraries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.config import MachineConfig

log = logging.getLogger(__name__)


class _NoTraceback(logging.Filter):
    """A library's error as one line (its type and message), without the traceback: a server
    that restarts is an expected event, and the source says what it means."""

    def __init__(self, library: str) -> None:
        super().__init__()
        self.library = library

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == self.library or record.name.startswith(self.library + ".")
        if mine and record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet(library: str, level: int = logging.CRITICAL) -> None:
    """Silence a client library's own logging (a hex dump per Modbus timeout, a line per
    OPC-UA notification) unless the edge logs at DEBUG; the source logs one line per change of
    state instead. What still gets through has no traceback."""
    for handler in logging.getLogger().handlers:  # the records of its child loggers too
        if not any(isinstance(f, _NoTraceback) and f.library == library for f in handler.filters):
            handler.addFilter(_NoTraceback(library))
    if not logging.getLogger("edge").isEnabledFor(logging.DEBUG):
        logging.getLogger(library).setLevel(level)


@dataclass
class Samples:
    """Samples of several sensors, column-wise."""

    t: dict[str, list[npt.NDArray[np.int64]]] = field(default_factory=dict)
    v: dict[str, list[npt.NDArray[np.float64]]] = field(default_factory=dict)
    q: dict[str, list[npt.NDArray[np.uint8]]] = field(default_factory=dict)

    def add(
        self,
        sensor: str,
        t: npt.NDArray[np.int64],
        v: npt.NDArray[np.float64],
        q: npt.NDArray[np.uint8],
    ) -> None:
        self.t.setdefault(sensor, []).append(t)
        self.v.setdefault(sensor, []).append(v)
        self.q.setdefault(sensor, []).append(q)


# --- Modbus -------------------------------------------------------------------------------------


class QueuedSource:
    """A source whose client pushes samples into a queue from ``keep_connected``; ``stream``
    hands them over in one batch per poll interval."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.queue: asyncio.Queue[tuple[str, int, float, int]] = asyncio.Queue(maxsize=1_000_000)
        self.reconnects = 0

    async def keep_connected(self, stop: asyncio.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def stream(self, stop: asyncio.Event) -> AsyncIterator[Samples]:
        keeper = asyncio.ensure_future(self.keep_connected(stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval_ms / 1000)
                batch = drain(self.queue)
                if batch is not None:
                    yield batch
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    def close(self) -> None:
        pass


def drain(queue: asyncio.Queue[tuple[str, int, float, int]]) -> Samples | None:
    """Everything waiting in ``queue`` as one batch, each sensor in time order."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    if not items:
        return None
    batch = Samples()
    by_sensor: dict[str, list[tuple[int, float, int]]] = {}
    for sensor_id, stamp, value, quality in items:
        by_sensor.setdefault(sensor_id, []).append((stamp, value, quality))
    for sensor_id, rows in by_sensor.items():
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vs = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        qs = np.fromiter((r[2] for r in rows), dtype=np.uint8, count=len(rows))
        order = np.argsort(ts, kind="stable")
        batch.add(sensor_id, ts[order], vs[order], qs[order])
    return batch
