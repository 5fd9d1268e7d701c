"""Batch datasets (VerTac v0.1 workflows): recorded cycles imported from CSV or Parquet files,
and whole datasets exported as one file.

Files VerTac reads, by their columns (CSV or Parquet alike, told apart by content):

- **long**: a time column, ``sensor_id`` (or ``sensor``, ``sensor_name``), ``value`` and
  optionally ``quality`` (0-255), one row per sample: the samples CSV VerTac exports
  (``timestamp_ns,time_utc,sensor_id,value,quality``) is one;
- **wide**: a time column and one numeric column per sensor, one row per instant.

The time column is ``timestamp_ns`` (integer ns since the Unix epoch), ``timestamp`` or
``time_utc`` (ISO 8601, or seconds since the epoch as a number; Parquet timestamps too), or
``t_s``/``time_s`` (seconds since the cycle started; the cycle is then placed at the import
time). Either one file holds one cycle, or a ``cycle_id`` (or ``cycle``) column cuts one long
file into cycles; an optional ``label`` column labels each cycle.

Every imported cycle is stored as a live one is, by the cycles service that owns cycles
(``services/cycles/datasets.py``): its recording in the object store, a ``live_cycles`` row
(state completed, start reason ``import``) and an entry of the dataset.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.frames import QUALITY_GOOD, Frame, Series
from schemas.timeutil import NS

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint8]]
TIME_COLUMNS = ("timestamp_ns", "timestamp", "time_utc", "time", "t_s", "time_s")
RELATIVE_TIME = ("t_s", "time_s")
SENSOR_COLUMNS = ("sensor_id", "sensor", "sensor_name")
CYCLE_COLUMNS = ("cycle_id", "cycle")
NOT_SENSORS = {*TIME_COLUMNS, *CYCLE_COLUMNS, "label", "stream_id", "quality", "note"}
CYCLE_KEY = re.compile(r"[^A-Za-z0-9_.-]+")


class DatasetError(ValueError):
    """A file that cannot be imported; ``field`` names where (file, column or row)."""

    def __init__(self, message: str, field: str = "files") -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass
class ParsedCycle:
    """One cycle read from a file: per sensor its timestamps (ns), values and qualities."""

    key: str  # file stem, or the value of the cycle column
    label: str = ""
    series: dict[str, Samples] = field(default_factory=dict)

    @property
    def start_ns(self) -> int:
        return int(min(t[0] for t, _, _ in self.series.values()))

    @property
    def end_ns(self) -> int:
        return int(max(t[-1] for t, _, _ in self.series.values()))

    @property
    def samples(self) -> dict[str, int]:
        return {sid: len(v) for sid, (_, v, _) in self.series.items()}

    def frame(self, stream_id: str) -> Frame:
        out = []
        for sid, (t, v, q) in self.series.items():
            good = bool((q == QUALITY_GOOD).all())
            out.append(Series(sid, v, int(t[0]), 0, t, None if good else q))
        return Frame(stream_id, 0, tuple(out), time.time_ns())


def read_file(name: str, data: bytes) -> pa.Table:
    """A CSV or Parquet file as a table (Parquet is told by its magic bytes, not its name)."""
    if not data.strip():
        raise DatasetError(f"{name} is empty", name)
    try:
        if data[:4] == b"PAR1":
            return pq.read_table(io.BytesIO(data))
        return pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types={"sensor_id": pa.string(), "sensor": pa.string(),
                              "sensor_name": pa.string(), "cycle_id": pa.string(),
                              "cycle": pa.string(), "label": pa.string()},
                strings_can_be_null=False,
            ),
        )  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DatasetError(f"{name} is not a readable CSV or Parquet file: {exc}", name) from exc


UNPACKED_MAX_BYTES = 256 * 2**20  # what the files of one upload may hold, unpacked


def unpack_upload(
    name: str, data: bytes, max_bytes: int = UNPACKED_MAX_BYTES
) -> list[tuple[str, bytes]]:
    """The files of one upload: a zip's CSV and Parquet members, or the file itself. A zip is
    unpacked counting the bytes it really gives (what its directory claims may lie), and
    refused once they pass ``max_bytes``."""
    if data[:4] != b"PK\x03\x04":
        return [(name, data)]
    too_big = DatasetError(
        f"{name}: the zip unpacks to more than {max_bytes // 2**20} MiB (split the import)", name
    )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            kinds = (".csv", ".parquet", ".pq", ".txt")
            members = [
                m for m in z.infolist() if not m.is_dir() and m.filename.lower().endswith(kinds)
            ]
            if sum(m.file_size for m in members) > max_bytes:
                raise too_big
            out, room = [], max_bytes
            for m in members:
                with z.open(m) as f:
                    body = f.read(room + 1)
                if len(body) > room:
                    raise too_big
                room -= len(body)
                out.append((m.filename, body))
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise DatasetError(f"{name} is not a readable zip: {exc}", name) from exc


def _times(table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    column = next((c for c in TIME_COLUMNS if c in table.column_names), None)
    if column is None:
        raise DatasetError(
            f"{name}: no time column; give one of {', '.join(TIME_COLUMNS)} "
            f"(columns: {', '.join(table.column_names)})",
            f"{name}.columns",
        )
    col = table.column(column)
    try:
        if pa.types.is_timestamp(col.type):
            return np.asarray(pc.cast(col, pa.timestamp("ns", tz="UTC")).to_numpy(
                zero_copy_only=False).astype("datetime64[ns]").astype(np.int64))  # fmt: skip
        if column == "timestamp_ns":
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return _text_times(col)
        seconds = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise DatasetError(
            f"{name}: column {column!r} is not a time: {exc}", f"{name}.{column}"
        ) from exc
    if not np.isfinite(seconds).all():
        raise DatasetError(f"{name}: column {column!r} has empty or invalid times",
                           f"{name}.{column}")  # fmt: skip
    if column in RELATIVE_TIME:
        seconds = seconds + time.time()  # a cycle on its own time axis: placed at import time
    return np.rint(seconds * 1e6).astype(np.int64) * 1000


def _text_times(col: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """ISO 8601 times (vectorised), or seconds since the epoch, or a mix of both."""
    try:
        parsed = pc.cast(col, pa.timestamp("ns", tz="UTC"))
        return np.asarray(
            parsed.to_numpy(zero_copy_only=False).astype("datetime64[ns]").astype(np.int64)
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        seconds = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False))
        return np.rint(seconds * 1e6).astype(np.int64) * 1000
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    from schemas.timeutil import ns_of

    out = np.empty(len(col), dtype=np.int64)
    for i, text in enumerate(col.to_pylist()):  # a mixed column: each value on its own
        if not text:
            raise ValueError(f"row {i + 1} has no time")
        try:
            out[i] = round(float(text) * 1e6) * 1000
        except ValueError:
            out[i] = ns_of(datetime.fromisoformat(text))  # raises ValueError naming it
    return out


def _strings(table: pa.Table, column: str) -> npt.NDArray[np.str_]:
    return np.asarray(pc.cast(table.column(column), pa.string()).to_numpy(zero_copy_only=False),
                      dtype=str)  # fmt: skip


def _floats(table: pa.Table, column: str, name: str) -> npt.NDArray[np.float64]:
    try:
        col = pc.cast(table.column(column), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(f"{name}: column {column!r} is not numeric: {exc}",
                           f"{name}.{column}") from exc  # fmt: skip
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def parse_cycles(name: str, table: pa.Table) -> list[ParsedCycle]:
    """The cycles of one file (module docstring: long or wide, one cycle or a cycle column)."""
    if table.num_rows == 0:
        raise DatasetError(f"{name} has no rows", name)
    t = _times(table, name)
    cycle_col = next((c for c in CYCLE_COLUMNS if c in table.column_names), None)
    keys = _strings(table, cycle_col) if cycle_col else np.full(len(t), _stem(name))
    labels = _strings(table, "label") if "label" in table.column_names else np.full(len(t), "")
    sensor_col = next((c for c in SENSOR_COLUMNS if c in table.column_names), None)
    out = []
    for key in dict.fromkeys(keys.tolist()):  # in the order of the file
        rows = keys == key
        label = next((x for x in labels[rows].tolist() if x), "")
        cycle = ParsedCycle(key=str(key), label=label)
        if sensor_col is not None:
            cycle.series = _long(table, name, sensor_col, t, rows)
        else:
            cycle.series = _wide(table, name, t, rows)
        if not cycle.series:
            raise DatasetError(f"{name}: cycle {key!r} has no samples", name)
        out.append(cycle)
    return out


def _long(
    table: pa.Table, name: str, sensor_col: str, t: npt.NDArray[np.int64],
    rows: npt.NDArray[np.bool_],
) -> dict[str, Samples]:  # fmt: skip
    """Rows ``rows`` of a long table: one row per sample."""
    if "value" not in table.column_names:
        raise DatasetError(f"{name}: a {sensor_col!r} column needs a 'value' column",
                           f"{name}.columns")  # fmt: skip
    sensors = _strings(table, sensor_col)
    values = _floats(table, "value", name)
    if "quality" in table.column_names:
        q = _floats(table, "quality", name)
        if ((q < 0) | (q > 255) | ~np.isfinite(q)).any():
            raise DatasetError(f"{name}: quality must be 0-255", f"{name}.quality")
        quality = q.astype(np.uint8)
    else:
        quality = np.full(len(t), QUALITY_GOOD, dtype=np.uint8)
    out = {}
    for sid in dict.fromkeys(sensors[rows].tolist()):
        sel = rows & (sensors == sid)
        out[str(sid)] = _sorted(t[sel], values[sel], quality[sel])
    return out


def _wide(
    table: pa.Table, name: str, t: npt.NDArray[np.int64], rows: npt.NDArray[np.bool_]
) -> dict[str, Samples]:
    """Rows ``rows`` of a wide table: a column per sensor (empty cells are no sample)."""
    columns = [c for c in table.column_names if c not in NOT_SENSORS]
    if not columns:
        raise DatasetError(
            f"{name}: no sensor columns (columns: {', '.join(table.column_names)})",
            f"{name}.columns",
        )
    out = {}
    for column in columns:
        v = _floats(table, column, name)[rows]
        keep = np.isfinite(v)
        if keep.any():
            q = np.full(int(keep.sum()), QUALITY_GOOD, dtype=np.uint8)
            out[column] = _sorted(t[rows][keep], v[keep], q)
    return out


def _sorted(
    t: npt.NDArray[np.int64], v: npt.NDArray[np.float64], q: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint8]]:
    order = np.argsort(t, kind="stable")
    return t[order], v[order], q[order]


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def cycle_id_of(dataset: str, key: str) -> str:
    """The cycle id of an imported cycle: stable, so importing the same file again updates it."""
    token = CYCLE_KEY.sub("-", key).strip("-") or "cycle"
    return f"{dataset}.{token}"[:128]


def registration_for(dataset: str, stream_id: str, cycles: list[ParsedCycle]) -> Any:
    """A registration for a new stream that holds imported cycles: their sensors, each with
    its median sampling rate."""
    from schemas.messages import SensorSpec, StreamRegistration
    from schemas.v1.base import SENSOR_ID_PATTERN

    rates: dict[str, list[float]] = {}
    for c in cycles:
        for sid in c.series:
            if not (0 < len(sid) <= 128 and re.fullmatch(SENSOR_ID_PATTERN, sid)):
                raise DatasetError(
                    f"cycle {c.key!r}: column {sid!r} cannot be a sensor id (no spaces, commas, "
                    "'=' or control characters, at most 128 characters)",
                    f"{c.key}.columns",
                )
    for c in cycles:
        for sid, (t, _, _) in c.series.items():
            if len(t) > 1:
                step = float(np.median(np.diff(t)))
                rates.setdefault(sid, []).append(NS / step if step > 0 else 1.0)
            else:
                rates.setdefault(sid, [])
    return StreamRegistration(
        device_name=f"Dataset {dataset}",
        stream_id=stream_id,
        description=f"cycles imported into dataset {dataset}",
        dataset_id=dataset,
        sensors=[
            SensorSpec(id=sid, rate_hz=min(1_000_000.0, float(np.median(r))) if r else 1.0)
            for sid, r in rates.items()
        ],
    )
