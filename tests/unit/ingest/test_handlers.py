"""Ingest's handlers on an in-memory store and line sink: a frame is stored as it arrived (a
shuffled binary frame is not encoded again) and reads back equal, a frame delivered twice is
stored once and counted once, and the InfluxDB lines carry every sample with its dataset tag."""

from __future__ import annotations

import numpy as np
import zstandard

from schemas.frames import Frame, Series, decode_binary, encode_binary
from schemas.messages import StreamRegistered
from services.common.metrics import Metrics
from services.ingest.handlers import DatasetIds, PersistFrames, WriteInflux
from services.ingest.logic import FrameRow, from_payload
from tests.fakes import delivered

T0 = 1_767_225_600_000_000_000


class FakeFrameStore:
    """``live_frames`` in memory: idempotent on (stream, seq, first sample time)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int], FrameRow] = {}
        self.rolled: list[Frame] = []

    async def write(self, rows: list[FrameRow], frames: list[Frame] | None = None) -> int:
        new = [r for r in rows if (r.stream_id, r.seq, r.t_first_ns) not in self.rows]
        for r in new:
            self.rows[(r.stream_id, r.seq, r.t_first_ns)] = r
        fresh = {(r.stream_id, r.seq) for r in new}
        self.rolled += [f for f in frames or [] if (f.stream_id, f.seq) in fresh]
        return sum(r.n_samples for r in new)

    async def upsert_streams(self, records: list[StreamRegistered]) -> None:
        return None


class FakeSink:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def write(self, lines: bytes) -> None:
        self.bodies.append(lines)

    def close(self) -> None:
        return None


def frame(seq: int) -> Frame:
    t = T0 + seq * 1_000_000_000
    return Frame("press", seq, (Series("p", np.arange(100, dtype="f4") + seq, t, 10_000_000),
                                Series("temp", np.full(1, 40.5), t, 0)))  # fmt: skip


def samples_counted(metrics: Metrics) -> float:
    return (
        metrics.registry.get_sample_value(
            "vertac_samples_persisted_total", {"service": "ingest", "consumer": "ingest"}
        )
        or 0.0
    )


async def test_frames_are_stored_once_as_they_arrived_and_read_back_equal() -> None:
    store, metrics = FakeFrameStore(), Metrics("ingest")
    persist = PersistFrames(store, metrics, "ingest", zstd_level=3)  # type: ignore[arg-type]
    # as ingest's consumer decodes them: checked, no arrays built (it stores bytes)
    wire = [encode_binary(frame(s), shuffled=True) for s in range(5)]
    arrived = [decode_binary(data, (), finite=True) for data in wire]
    await persist([delivered(f) for f in arrived])
    await persist([delivered(arrived[2]), delivered(arrived[4])])  # delivered again
    assert len(store.rows) == 5 and len(store.rolled) == 5
    assert samples_counted(metrics) == 5 * 101  # the repeats count nothing
    for f, data in zip(arrived, wire, strict=True):
        row = store.rows[("press", f.seq, f.first_ns())]
        payload = zstandard.ZstdDecompressor().decompress(row.payload)
        assert payload == data  # stored as it arrived: nobody encoded it again
        assert from_payload(row.payload).equals(frame(f.seq))
        assert (row.n_samples, row.n_sensors) == (101, 2)


async def test_influx_lines_carry_every_sample_and_the_streams_dataset() -> None:
    sink, metrics = FakeSink(), Metrics("ingest")

    async def lookup(stream_id: str) -> StreamRegistered | None:
        return StreamRegistered.model_validate(
            {"stream_id": stream_id, "device_name": "Press", "dataset_id": "trial-7",
             "sensors": [], "registered_at": "2026-01-01T00:00:00Z"}
        )  # fmt: skip

    write = WriteInflux(sink, metrics, "ingest", DatasetIds(lookup))  # type: ignore[arg-type]
    await write([delivered(frame(0)), delivered(frame(1))])
    (body,) = sink.bodies
    lines = body.decode().splitlines()
    assert len(lines) == 2 * 101
    assert all(
        line.startswith("sensor_readings,") and "dataset_id=trial-7" in line for line in lines
    )
    assert samples_counted(metrics) == 202


async def test_a_json_frame_of_single_samples_is_stored_readable() -> None:
    # JSON lets a one-value series give t0_ns alone (no period): ingest encodes such a frame for
    # storage, and the stored bytes must decode again (they once could not)
    from schemas.frames import decode_json

    body = (b'{"stream_id": "press", "seq": 1, "sensors": ['
            b'{"sensor_id": "temp", "values": [40.5], "t0_ns": 1767225600000000000},'
            b'{"sensor_id": "p", "values": [1.0, 2.0], "t0_ns": 1767225600000000000,'
            b' "period_ns": 10000000}]}')  # fmt: skip
    store = FakeFrameStore()
    persist = PersistFrames(store, Metrics("ingest"), "ingest", zstd_level=3)  # type: ignore[arg-type]
    arrived = decode_json(body, finite=True)
    await persist([delivered(arrived)])
    (row,) = store.rows.values()
    back = from_payload(row.payload)
    assert back.equals(arrived)
    assert back.series[0].timestamps().tolist() == [1_767_225_600_000_000_000]
