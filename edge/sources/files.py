"""Replay of recorded samples from CSV or Parquet files, at their own pace or faster."""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.config import CsvSource, MachineConfig, SensorConfig
from edge.sources import register
from edge.sources.base import Samples
from schemas.frames import QUALITY_GOOD
from schemas.timeutil import NS, ns_of

log = logging.getLogger(__name__)


def read_table(
    path: Path, sensors: list[SensorConfig]
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
    """A CSV or Parquet file (by its suffix) as timestamps (ns) and one column per sensor."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path, sensors)
    return read_csv(path, sensors)


def read_parquet(
    path: Path, sensors: list[SensorConfig]
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
    """A Parquet file with a ``timestamp`` column (a timestamp type, or seconds as a number)."""
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    table = pq.read_table(path)
    if "timestamp" not in table.column_names:
        raise ValueError(
            f"{path}: no 'timestamp' column (columns: {', '.join(table.column_names)})"
        )
    column = table.column("timestamp")
    if pat.is_timestamp(column.type):
        t = (
            column.cast("timestamp[ns, tz=UTC]")
            .to_numpy()
            .astype("datetime64[ns]")
            .astype(np.int64)
        )
    else:
        t = np.rint(column.to_numpy().astype(np.float64) * 1e6).astype(np.int64) * 1000
    values = {}
    for s in sensors:
        name = s.column or s.id
        if name not in table.column_names:
            raise ValueError(f"{path}: no column {name!r} for sensor {s.id}")
        raw = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        values[s.id] = raw * s.scale + s.offset
    return t, values


def read_csv(
    path: Path, sensors: list[SensorConfig]
) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]]]:
    """Timestamps (ns) and one column per sensor; a wrong header names the missing column."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    if "timestamp" not in header:
        raise ValueError(f"{path}: no 'timestamp' column (columns: {', '.join(header)})")
    cols = {name: i for i, name in enumerate(header)}
    raw_t = [r[cols["timestamp"]] for r in body]
    try:
        # to the microsecond a float of seconds still carries, then ns
        t = np.rint(np.asarray(raw_t, dtype=np.float64) * 1e6).astype(np.int64) * 1000
    except ValueError:
        t = np.array([ns_of(datetime.fromisoformat(x)) for x in raw_t], dtype=np.int64)
    values = {}
    for s in sensors:
        name = s.column or s.id
        if name not in cols:
            raise ValueError(f"{path}: no column {name!r} for sensor {s.id}")
        col = [r[cols[name]] for r in body]
        values[s.id] = (
            np.asarray([float(x) if x != "" else np.nan for x in col]) * s.scale + s.offset
        )
    return t, values


@register("csv", "parquet")
class CsvReplay:
    """Replays a CSV file as a live stream, timestamps moved to now, at ``speed`` x real time."""

    def __init__(self, source: CsvSource, config: MachineConfig) -> None:
        self.source = source
        self.config = config
        self.t, self.values = read_table(source.path, config.sensors)

    async def stream(self, stop: asyncio.Event) -> AsyncIterator[Samples]:
        if not len(self.t):
            return
        chunk_ns = round(self.config.poll_interval_ms * 1e6)
        while not stop.is_set():
            base = time.time_ns() - int(self.t[0])
            wall0 = time.monotonic()
            span = int(self.t[-1] - self.t[0])
            for lo in range(0, span + 1, chunk_ns):
                if stop.is_set():
                    return
                sel = (self.t - self.t[0] >= lo) & (self.t - self.t[0] < lo + chunk_ns)
                if self.source.speed > 0:
                    due = wall0 + (lo + chunk_ns) / NS / self.source.speed
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await asyncio.sleep(0)
                if not sel.any():
                    continue
                batch = Samples()
                for sensor_id, v in self.values.items():
                    ok = sel & np.isfinite(v)
                    batch.add(
                        sensor_id,
                        self.t[ok] + base,
                        v[ok],
                        np.full(int(ok.sum()), QUALITY_GOOD, dtype=np.uint8),
                    )
                yield batch
            if not self.source.loop:
                return

    def close(self) -> None:
        pass


# --- sources that push (OPC-UA, MQTT) -------------------------------------------------------------
