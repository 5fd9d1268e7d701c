"""Ingest logic: storage rows and InfluxDB line protocol."""

from __future__ import annotations

import numpy as np
import zstandard

from schemas.frames import Frame, Series
from services.ingest.logic import from_payload, influx_lines, to_row


def test_rows_hold_the_frame_and_its_time_span() -> None:
    frame = Frame(
        "s",
        3,
        (
            Series("a", np.arange(10.0), 1_000, 10),
            Series("b", np.ones(2, "f4"), 5_000, 0, np.array([5_000, 9_000])),
        ),
    )
    row = to_row(frame, zstandard.ZstdCompressor())
    assert (row.seq, row.t_first_ns, row.t_last_ns, row.n_samples, row.n_sensors) == (
        3, 1_000, 9_000, 12, 2,
    )  # fmt: skip
    assert from_payload(row.payload).equals(frame)


def test_line_protocol_has_tags_fields_and_nanosecond_times() -> None:
    frame = Frame("press-1", 0, (Series("p,1", np.array([1.5, np.nan]), 1_000, 1_000,
                                        quality=np.array([64, 192], "u1")),))  # fmt: skip
    lines = influx_lines(frame, 3_000, cycle_id="c 7").decode().splitlines()
    assert lines == [
        "sensor_readings,stream_id=press-1,cycle_id=c\\ 7,sensor_name=p\\,1 "
        "value=1.5,quality=64i,latency_ms=0.002 1000"
    ]  # NaN has no line-protocol form and is left to PostgreSQL
