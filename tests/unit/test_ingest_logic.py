"""Ingest logic: storage rows and InfluxDB line protocol."""

from __future__ import annotations

import numpy as np
import zstandard

from schemas.frames import Frame, Series, decode_binary, encode_binary
from services.ingest.logic import digest, from_payload, influx_lines, to_row


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


def test_a_digest_keeps_each_sensors_extremes_in_the_order_they_came() -> None:
    frame = Frame("press-1", 7, (
        Series("p", np.array([3.0, 9.0, 1.0, 5.0]), 1_000, 10),
        Series("flat", np.array([2.0, 2.0, 2.0]), 1_000, 10),
        Series("t", np.array([4, 1], dtype="i4"), 0, 0, timestamps_ns=np.array([50, 70]),
               quality=np.array([0, 2], dtype="u1")),
        Series("one", np.array([7.0]), 1_000, 1_000),
        Series("none", np.array([], dtype="f8"), 1_000, 10),
    ), sent_ns=99)  # fmt: skip
    small = digest(frame)
    assert (small.stream_id, small.seq, small.sent_ns) == ("press-1", 7, 99)
    p, flat, t, one, none = small.series
    # on its own clock: the start and the middle of its span (4 samples of 10 ns: 1000, 1020)
    assert p.values.tolist() == [9.0, 1.0] and p.timestamps().tolist() == [1_000, 1_020]
    assert flat.values.tolist() == [2.0, 2.0]
    # explicit timestamps: each extreme at its own time, with its quality and dtype
    assert t.values.tolist() == [4, 1] and t.values.dtype == np.int32
    assert t.timestamps().tolist() == [50, 70] and t.qualities().tolist() == [0, 2]
    assert one.equals(frame.series[3]) and none.n == 0
    # it travels and is stored as any frame: encoded, decoded, the same
    assert decode_binary(encode_binary(small, shuffled=True)).series[0].equals(p)
    # a frame decoded for none of its sensors (as ingest reads it) gives the same digest
    lazy = decode_binary(encode_binary(frame, shuffled=True), sensors=())
    assert all(a.equals(b) for a, b in zip(digest(lazy).series, small.series, strict=True))


def test_a_regular_frame_is_digested_as_one_matrix_to_what_each_sensor_gives() -> None:
    rng = np.random.default_rng(3)
    frame = Frame("press-1", 8, tuple(
        Series(f"s{k}", rng.normal(size=100).astype(dtype), 5_000, 1_000_000)
        for k, dtype in enumerate(["f4", "f4", "f8", "i2"])
    ))  # fmt: skip
    lazy = decode_binary(encode_binary(frame, shuffled=True), sensors=())
    fast, slow = digest(lazy), digest(frame)
    assert all(a.equals(b) for a, b in zip(fast.series, slow.series, strict=True))
    for got, whole in zip(fast.series, frame.series, strict=True):
        assert sorted(got.values.tolist()) == [whole.values.min(), whole.values.max()]
        assert got.values.dtype == whole.values.dtype
        assert got.timestamps().tolist() == [5_000, 5_000 + 50_000_000]
