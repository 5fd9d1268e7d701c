"""Edge pieces: configuration errors, register decoding, read planning, the durable buffer."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from edge.buffer import BufferFull, FrameBuffer
from edge.config import ConfigError, SensorConfig, load
from edge.sources.modbus import decode_registers, plan_reads
from schemas.frames import Frame, Series, decode_binary

GOOD = """
stream_id: press-07
source: {type: modbus, host: 127.0.0.1, port: 5020}
buffer: {path: buf.sqlite}
sensors:
  - {id: p, register: holding, address: 0, data_type: float32}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "machine.yaml"
    path.write_text(text)
    return path


def test_a_good_file_loads_with_paths_next_to_it(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.buffer.path == tmp_path / "buf.sqlite"
    assert config.registration().sensors[0].rate_hz == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stream_id: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (
            GOOD.replace("stream_id: press-07", "stream_id: bad id"),
            "stream_id: String should match",
        ),
        (GOOD.replace("float32", "float16"), "sensors.0.data_type"),
        (GOOD.replace("port: 5020", "port: 5020, colour: red"), "source.modbus.colour"),
        (GOOD.replace("buffer: {path: buf.sqlite}\n", ""), "buffer: Field required"),
        (GOOD.replace("register: holding", "register: coil"), "data_type must be bool"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load(write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path / "nope.yaml")


def regs(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=">u2").astype(np.uint16)


@pytest.mark.parametrize(
    ("data_type", "word", "byte", "raw", "expected"),
    [
        ("float32", "big", "big", struct.pack(">f", 12.5), 12.5),
        (
            "float32",
            "little",
            "big",
            struct.pack(">f", 12.5)[2:] + struct.pack(">f", 12.5)[:2],
            12.5,
        ),
        (
            "float32",
            "big",
            "little",
            bytes(
                b
                for pair in zip(
                    struct.pack(">f", 12.5)[1::2], struct.pack(">f", 12.5)[::2], strict=True
                )
                for b in pair
            ),
            12.5,
        ),
        ("int16", "big", "big", struct.pack(">h", -5), -5),
        ("uint32", "big", "big", struct.pack(">I", 70000), 70000),
        ("float64", "big", "big", struct.pack(">d", -1.25), -1.25),
    ],
)
def test_registers_decode_by_type_and_order(data_type, word, byte, raw, expected) -> None:
    sensor = SensorConfig(id="x", data_type=data_type, word_order=word, byte_order=byte)
    assert decode_registers(regs(raw), sensor) == pytest.approx(expected)


def test_scale_and_offset() -> None:
    sensor = SensorConfig(id="x", data_type="int16", scale=0.1, offset=-20)
    assert decode_registers(regs(struct.pack(">h", 250)), sensor) == pytest.approx(5.0)


def test_reads_are_merged_per_unit_and_register_type() -> None:
    sensors = [
        SensorConfig(id="a", address=0, data_type="float32"),
        SensorConfig(id="b", address=2, data_type="uint16"),
        SensorConfig(id="c", address=40, data_type="uint16"),
        SensorConfig(id="d", address=3, data_type="uint16", unit_id=2),
        SensorConfig(id="e", address=0, register="coil", data_type="bool"),
    ]
    groups = plan_reads(sensors, max_gap=8)
    shape = sorted(
        (g.unit_id, g.register, g.start, g.count, tuple(s.id for s in g.sensors)) for g in groups
    )
    assert shape == [
        (1, "coil", 0, 1, ("e",)),
        (1, "holding", 0, 3, ("a", "b")),
        (1, "holding", 40, 1, ("c",)),
        (2, "holding", 3, 1, ("d",)),
    ]


def frame_maker(n: int = 100):
    return lambda seq: Frame("s", seq, (Series("p", np.arange(n, dtype="f8"), seq * 1000, 10),))


def test_the_buffer_keeps_order_and_survives_a_reopen(tmp_path: Path) -> None:
    buf = FrameBuffer(tmp_path / "b.sqlite", "s", 10**6)
    for _ in range(5):
        buf.put(frame_maker())
    assert [seq for seq, _ in buf.peek(3)] == [0, 1, 2]
    buf.remove([0, 1])
    buf.close()
    again = FrameBuffer(tmp_path / "b.sqlite", "s", 10**6)
    rows = again.peek(10)
    assert [seq for seq, _ in rows] == [2, 3, 4]
    assert decode_binary(rows[0][1]).seq == 2
    assert again.put(frame_maker()).seq == 5  # numbering continues
    status = again.status()
    assert (status.depth, status.published, status.next_seq) == (4, 2, 6)


def test_a_full_buffer_refuses_new_frames_and_counts_them(tmp_path: Path) -> None:
    buf = FrameBuffer(tmp_path / "b.sqlite", "s", 500)
    buf.put(frame_maker())
    with pytest.raises(BufferFull, match="limit 500"):
        buf.put(frame_maker())
    assert buf.status().refused == 1
    assert buf.status().depth == 1  # what was buffered stays


def test_sparkplug_payloads_round_trip_and_signed_ints_decode() -> None:
    from edge.sources import sparkplug

    payload = sparkplug.encode(
        [
            sparkplug.Metric("Pressure", 1, 1_700_000_000_123, sparkplug.DOUBLE, 12.5),
            sparkplug.Metric(None, 2, None, sparkplug.DOUBLE, -3.25),
        ],
        timestamp_ms=1_700_000_000_000,
        seq=7,
    )
    decoded = sparkplug.decode(payload)
    assert (decoded.timestamp_ms, decoded.seq) == (1_700_000_000_000, 7)
    assert decoded.metrics[0] == sparkplug.Metric("Pressure", 1, 1_700_000_000_123, 10, 12.5)
    assert decoded.metrics[1].alias == 2
    assert decoded.metrics[1].value == -3.25
    # an Int16 of -2 as Tahu writes it: int_value (field 10) holding 65534
    metric = bytes([0x20, 2, 0x50]) + bytes([0xFE, 0xFF, 0x03])
    raw = bytes([0x12, len(metric)]) + metric
    assert sparkplug.decode(raw).metrics[0].number() == -2
    # and as a 32-bit two's complement (4294967294), the other way writers put it
    metric = bytes([0x20, 2, 0x50]) + bytes([0xFE, 0xFF, 0xFF, 0xFF, 0x0F])
    assert sparkplug.decode(bytes([0x12, len(metric)]) + metric).metrics[0].number() == -2
    # without a datatype of its own, the birth's datatype decides
    metric = bytes([0x50]) + bytes([0xFE, 0xFF, 0x03])
    assert sparkplug.decode(bytes([0x12, len(metric)]) + metric).metrics[0].number(2) == -2
    with pytest.raises(sparkplug.SparkplugError):
        sparkplug.decode(b"\x12\x05ab")
