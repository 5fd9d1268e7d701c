"""A dataset's cycles as one Parquet file, or as a zip of samples CSVs and an index, for download
(the gateway's dataset export)."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.frames import Frame
from services.gateway.csvtext import cell

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class ExportedCycle:
    cycle_id: str
    stream_id: str
    label: str
    frame: Frame | None
    analysis: dict[str, Any] | None  # AnalysisCompleted as JSON, when there is one


def _long_columns(c: ExportedCycle) -> dict[str, Any]:
    parts: dict[str, list[Any]] = {"t": [], "sid": [], "v": [], "q": []}
    if c.frame is not None:
        for s in c.frame.series:
            if s.n:
                parts["t"].append(s.timestamps())
                parts["sid"].append(np.full(s.n, s.sensor_id, dtype=object))
                parts["v"].append(s.values.astype(np.float64))
                parts["q"].append(s.qualities())
    if not parts["t"]:
        return {"timestamp_ns": np.zeros(0, np.int64), "sensor_id": np.zeros(0, object),
                "value": np.zeros(0), "quality": np.zeros(0, np.uint8)}  # fmt: skip
    return {
        "timestamp_ns": np.concatenate(parts["t"]),
        "sensor_id": np.concatenate(parts["sid"]),
        "value": np.concatenate(parts["v"]),
        "quality": np.concatenate(parts["q"]),
    }


def export_parquet(dataset: str, cycles: list[ExportedCycle]) -> bytes:
    """One Parquet file: a row per sample (``cycle_id, stream_id, label, timestamp_ns,
    sensor_id, value, quality`` and each cycle's ``health_score``, ``risk_class`` and
    ``reference_version``); the whole analysis of every cycle is in the file's metadata
    (key ``vertac.analysis``, JSON by cycle id). Reading it back imports it again."""
    tables = []
    for c in cycles:
        cols = _long_columns(c)
        n = len(cols["value"])
        a = c.analysis or {}
        tables.append(pa.table({
            "cycle_id": pa.array([c.cycle_id] * n, pa.string()),
            "stream_id": pa.array([c.stream_id] * n, pa.string()),
            "label": pa.array([c.label] * n, pa.string()),
            "timestamp_ns": pa.array(cols["timestamp_ns"], pa.int64()),
            "sensor_id": pa.array(cols["sensor_id"], pa.string()),
            "value": pa.array(cols["value"], pa.float64()),
            "quality": pa.array(cols["quality"], pa.uint8()),
            "health_score": pa.array([a.get("health_score")] * n, pa.float64()),
            "risk_class": pa.array([a.get("risk_class")] * n, pa.string()),
            "reference_version": pa.array([a.get("reference_version")] * n, pa.int64()),
        }))  # fmt: skip
    table = (
        pa.concat_tables(tables) if tables else pa.table({"cycle_id": pa.array([], pa.string())})
    )
    meta = {
        b"vertac.dataset": dataset.encode(),
        b"vertac.analysis": json.dumps({c.cycle_id: c.analysis for c in cycles}).encode(),
        b"vertac.exported_at": datetime.now(UTC).isoformat().encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def export_zip(
    dataset: str, cycles: list[ExportedCycle], recording_csv: Any, analysis_csv: Any
) -> bytes:
    """A zip of CSVs: per cycle ``<cycle_id>.csv`` (the samples CSV, which imports again) and,
    when analysed, ``<cycle_id>.analysis.csv``; ``dataset.csv`` lists every cycle with its label,
    stream, health score and risk class."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        index = ["cycle_id,stream_id,label,health_score,risk_class,reference_version"]
        for c in cycles:
            if c.frame is not None:
                z.writestr(f"{c.cycle_id}.csv", recording_csv(c.frame))
            a = c.analysis or {}
            if c.analysis is not None:
                z.writestr(f"{c.cycle_id}.analysis.csv", analysis_csv(c.analysis))
            index.append(",".join(cell(x) for x in (
                c.cycle_id, c.stream_id, c.label, a.get("health_score", ""),
                a.get("risk_class", ""), a.get("reference_version", ""))))  # fmt: skip
        z.writestr("dataset.csv", "\n".join(index) + "\n")
        z.writestr("README.txt", f"VerTac dataset {dataset}: one samples CSV per cycle "
                   "(timestamp_ns,time_utc,sensor_id,value,quality), its analysis when there is "
                   "one, and dataset.csv listing the cycles. `vertac dataset import NAME *.csv` "
                   "imports the samples files again.\n")  # fmt: skip
    return out.getvalue()


# --- storing imported cycles ---------------------------------------------------------------------
