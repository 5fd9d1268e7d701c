"""Frame encodings: round trips and errors that name the field."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from schemas.frames import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_JSON,
    Frame,
    FrameError,
    Series,
    decode,
    decode_binary,
    decode_json,
    encode_binary,
    to_json_model,
)


def mixed_rate_frame() -> Frame:
    rng = np.random.default_rng(3)
    return Frame(
        "press-01",
        42,
        (
            Series("pressure", rng.normal(100, 1, 1000).astype("f4"), 1_000_000_000, 1_000_000),
            Series("count", np.arange(5, dtype="i2"), 1_000_000_000, 200_000_000),
            Series(
                "temp",
                np.array([20.5, 20.6]),
                1_000_000_000,
                0,
                np.array([1_000_000_000, 1_700_000_003], dtype=np.int64),
                np.array([192, 64], dtype=np.uint8),
            ),
        ),
        sent_ns=123,
    )


@pytest.mark.parametrize("shuffled", [False, True])
def test_binary_round_trip_keeps_values_timestamps_quality_and_dtype(shuffled: bool) -> None:
    frame = mixed_rate_frame()
    back = decode_binary(encode_binary(frame, shuffled=shuffled))
    assert back.equals(frame)
    assert back.sent_ns == 123
    assert [s.values.dtype.str for s in back.series] == ["<f4", "<i2", "<f8"]
    assert back.series[2].qualities().tolist() == [192, 64]
    assert back.series[0].qualities().tolist() == [192] * 1000


def test_json_round_trip_and_content_type_choose_the_decoder() -> None:
    frame = mixed_rate_frame()
    payload = to_json_model(frame).model_dump_json().encode()
    assert decode_json(payload).equals(frame)
    assert decode(payload, {"Content-Type": CONTENT_TYPE_JSON}).equals(frame)
    binary = encode_binary(frame)
    assert decode(binary, {"Content-Type": CONTENT_TYPE_BINARY}).equals(frame)
    assert decode(binary, None).equals(frame)  # no header: the magic bytes decide


def test_an_unknown_content_type_is_named() -> None:
    with pytest.raises(FrameError) as err:
        decode(b"{}", {"Content-Type": "text/csv"})
    assert err.value.field == "Content-Type"


def test_timestamps_of_uniform_series_follow_the_period() -> None:
    s = Series("p", np.zeros(4), 10, 5)
    assert s.timestamps().tolist() == [10, 15, 20, 25]
    assert (s.first_ns(), s.last_ns()) == (10, 25)


def _tamper(frame: Frame, **changes: object) -> bytes:
    raw = encode_binary(frame, compact=False)
    header_len = int.from_bytes(raw[4:8], "little")
    header = msgpack.unpackb(raw[8 : 8 + header_len])
    for key, value in changes.items():
        if key.startswith("sensor0_"):
            header["sensors"][0][key.removeprefix("sensor0_")] = value
        else:
            header[key] = value
    new = msgpack.packb(header)
    return raw[:4] + len(new).to_bytes(4, "little") + new + raw[8 + header_len :]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"xx", "frame"),
        (b"NOPE" + bytes(8), "frame"),
        (b"VTF1" + (1000).to_bytes(4, "little"), "header"),
        ("v", "v"),
        ("sensor0_dtype", "sensors[0].dtype"),
        ("sensor0_n", "sensors[0].n"),
        ("seq", "seq"),
        ("stream_id", "stream_id"),
    ],
)
def test_broken_binary_frames_name_the_field(payload: object, field: str) -> None:
    frame = Frame("s", 1, (Series("p", np.zeros(3), 0, 1),))
    values = {"v": 2, "sensor0_dtype": "c16", "sensor0_n": 99, "seq": -1, "stream_id": "a b"}
    data = _tamper(frame, **{payload: values[payload]}) if isinstance(payload, str) else payload
    with pytest.raises(FrameError) as err:
        decode_binary(data)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_frame_on_the_wire_names_a_local_stream() -> None:
    """``<site>.<stream>`` is the id central gives a site's stream; no publisher may use it,
    though central stores and reads its frames under it."""
    frame = Frame("s", 1, (Series("p", np.zeros(3), 0, 1),))
    data = _tamper(frame, stream_id="north.s")
    assert decode_binary(data).stream_id == "north.s"  # as central stores it
    with pytest.raises(FrameError, match="site 'north'") as err:
        decode(data, None)
    assert err.value.field == "stream_id"


def test_trailing_bytes_are_rejected() -> None:
    frame = Frame("s", 1, (Series("p", np.zeros(3), 0, 1),))
    with pytest.raises(FrameError, match="left over"):
        decode_binary(encode_binary(frame) + b"\0")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stream_id": "s", "seq": 1, "sensors": []}, "sensors"),
        ({"stream_id": "s", "seq": -1, "sensors": [{"sensor_id": "p", "values": [1], "t0_ns": 0}]},
         "seq"),
        ({"stream_id": "s", "seq": 1, "sensors": [{"sensor_id": "p", "values": [1, 2]}]},
         "sensors.0"),
        ({"stream_id": "s", "seq": 1,
          "sensors": [{"sensor_id": "p", "values": [1], "timestamps_ns": [1, 2]}]}, "sensors.0"),
        ({"stream_id": "s", "seq": 1,
          "sensors": [{"sensor_id": "p", "values": [1], "t0_ns": 0, "quality": [300]}]},
         "sensors.0.quality.0"),
    ],
)  # fmt: skip
def test_broken_json_frames_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(FrameError) as err:
        decode_json(json.dumps(body).encode())
    assert err.value.field == field


def test_duplicate_sensor_ids_and_mismatched_lengths_are_refused() -> None:
    with pytest.raises(FrameError, match="repeat"):
        Frame("s", 0, (Series("p", np.zeros(1), 0, 1), Series("p", np.zeros(1), 0, 1)))
    with pytest.raises(FrameError, match="quality"):
        Series("p", np.zeros(2), 0, 1, None, np.zeros(3, dtype=np.uint8))


def test_the_storage_form_compresses_noisy_float32_below_four_bytes_a_sample() -> None:
    import zstandard

    rng = np.random.default_rng(0)
    frame = Frame(
        "s",
        0,
        tuple(
            Series(f"s{i}", (50 + rng.normal(0, 0.5, 1000)).astype("f4"), 0, 1_000_000)
            for i in range(16)
        ),
    )
    stored = zstandard.ZstdCompressor(level=3).compress(encode_binary(frame, shuffled=True))
    assert len(stored) / frame.n_samples < 4


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_frame_decoded_for_some_sensors_knows_the_whole_and_completes(shuffled: bool) -> None:
    frame = mixed_rate_frame()
    raw = encode_binary(frame, shuffled=shuffled)
    part = decode_binary(raw, {"count"})
    assert [s.sensor_id for s in part.series] == ["count"]
    assert part.series[0].values.tolist() == [0, 1, 2, 3, 4]
    assert (part.n_samples, part.n_sensors) == (frame.n_samples, 3)
    assert (part.first_ns(), part.last_ns()) == (frame.first_ns(), frame.last_ns())
    assert part.has("temp") and not part.has("nope")
    assert part.span is not None and part.span.shuffled is shuffled
    assert part.complete().equals(frame)
    nothing = decode_binary(raw, ())
    assert nothing.series == () and nothing.n_samples == frame.n_samples


def test_a_frame_decoded_in_part_is_checked_whole() -> None:
    raw = bytearray(encode_binary(mixed_rate_frame()))
    with pytest.raises(FrameError, match="left over"):
        decode_binary(bytes(raw) + b"x", ())
    header = msgpack.packb({"v": 1, "stream_id": "s", "seq": 0, "sensors": [
        {"id": "a", "dtype": "f8", "n": 1, "t0": 0, "dt": 1},
        {"id": "bad id", "dtype": "f8", "n": 1, "t0": 0, "dt": 1},
    ]})  # fmt: skip
    import struct

    data = struct.pack("<4sI", b"VTF1", len(header)) + header + bytes(16)
    with pytest.raises(FrameError, match="not a sensor id"):
        decode_binary(data, {"a"})


def _one(values: np.ndarray, t0: int = 1_000, dt: int = 10, timestamps=None, quality=None):  # type: ignore[no-untyped-def]
    return Frame("press-01", 1, (Series("p", values, t0, dt, timestamps, quality),))


@pytest.mark.parametrize("shuffled", [False, True])
def test_times_that_int64_cannot_hold_or_that_go_back_are_refused_by_field(
    shuffled: bool,
) -> None:
    near_end = 2**63 - 5
    cases = [
        (_one(np.zeros(10, "f4"), t0=near_end, dt=1), "sensors[0].t0"),
        (_one(np.zeros(3, "f4"), t0=-5, dt=1), "sensors[0].t0"),
        (_one(np.zeros(3, "f4"), t0=10, dt=0, timestamps=np.array([10, 30, 20])),
         "sensors[0].timestamps"),
        (_one(np.zeros(2, "f4"), t0=-10, dt=0, timestamps=np.array([-10, 5])),
         "sensors[0].timestamps"),
    ]  # fmt: skip
    for frame, field in cases:
        with pytest.raises(FrameError) as caught:
            decode_binary(encode_binary(frame, shuffled=shuffled))
        assert caught.value.field == field
    # equal times are kept: two samples of one instant
    same = _one(np.zeros(2, "f4"), t0=10, dt=0, timestamps=np.array([10, 10]))
    assert decode_binary(encode_binary(same, shuffled=shuffled)).equals(same)


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
@pytest.mark.parametrize("odd", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_stored_only_as_bad_samples(
    shuffled: bool, dtype: str, odd: float
) -> None:
    values = np.array([1.0, 2.0, odd, 4.0], dtype=dtype)
    good = encode_binary(_one(values), shuffled=shuffled)
    with pytest.raises(FrameError, match="sample 2 is NaN or infinite") as caught:
        decode_binary(good, sensors=(), finite=True)
    assert caught.value.field == "sensors[0].values"
    decode_binary(good)  # a reader that stores nothing takes it as it is
    marked = _one(values, quality=np.array([192, 192, 0, 192], dtype=np.uint8))
    back = decode_binary(encode_binary(marked, shuffled=shuffled), finite=True).series[0]
    assert np.array_equal(back.values, values, equal_nan=True)
    assert back.qualities().tolist() == [192, 192, 0, 192]
    # large finite values and integers are no NaN
    big = _one(np.array([3.0e38, -3.0e38, 1e-30], dtype=dtype))
    decode_binary(encode_binary(big, shuffled=shuffled), finite=True)
    ints = _one(np.array([-1, 2**31 - 1], dtype="i4"))
    decode_binary(encode_binary(ints, shuffled=shuffled), finite=True)


def test_the_one_pass_finite_check_names_the_right_sensor_among_many() -> None:
    rng = np.random.default_rng(2)
    series = [Series(f"s{i}", rng.normal(size=50).astype("f4"), 10, 10) for i in range(6)]
    series[2] = Series("s2", np.full(50, 3.0e38, dtype="f4"), 10, 10)  # huge, finite
    odd = rng.normal(size=50)
    odd[17] = np.nan
    series[4] = Series("s4", odd, 10, 10)
    raw = encode_binary(Frame("press-01", 1, tuple(series)), shuffled=True)
    with pytest.raises(FrameError, match="sample 17") as caught:
        decode_binary(raw, (), finite=True)
    assert caught.value.field == "sensors[4].values"


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_one_sample_series_without_a_period_round_trips(shuffled: bool) -> None:
    # what a JSON frame with t0_ns and one value gives: no period, no timestamps array
    from schemas.frames import Frame, Series, decode_binary, encode_binary

    t0 = 1_767_225_600_123_456_789
    frame = Frame("s", 7, (Series("temp", np.array([40.5]), t0, 0),
                           Series("p", np.arange(3, dtype="f4"), t0, 10_000_000)))  # fmt: skip
    back = decode_binary(encode_binary(frame, shuffled=shuffled))
    assert back.equals(frame)
    assert back.series[0].timestamps().tolist() == [t0]
