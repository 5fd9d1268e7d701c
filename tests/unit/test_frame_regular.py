"""The one-go decoder of regular frames gives what the general, sensor-by-sensor decoder gives,
and leaves everything else to it (so that bad input is refused the same way, naming the field)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from schemas import frames
from schemas.frame_regular import decode_regular
from schemas.frames import Frame, FrameError, Series, decode_binary, encode_binary

DTYPES = ("f4", "f8", "u1", "i2", "i4", "u2", "i8")


def general(data: bytes, sensors=None, finite: bool = False) -> Frame:
    """The general decoder alone."""
    original = frames.decode_regular
    frames.decode_regular = lambda *a: None  # type: ignore[assignment]
    try:
        return decode_binary(data, sensors, finite=finite)
    finally:
        frames.decode_regular = original  # type: ignore[assignment]


def regular(data: bytes, sensors=None, finite: bool = False) -> Frame | None:
    return decode_regular(data, sensors, finite)


def same(a: Frame, b: Frame) -> None:
    assert (a.stream_id, a.seq, a.sent_ns, a.span) == (b.stream_id, b.seq, b.sent_ns, b.span)
    assert (a.raw is None) == (b.raw is None)
    assert len(a.series) == len(b.series)
    for x, y in zip(a.series, b.series, strict=True):
        assert (x.sensor_id, x.t0_ns, x.period_ns) == (y.sensor_id, y.t0_ns, y.period_ns)
        assert x.values.dtype == y.values.dtype and np.array_equal(x.values, y.values)
        assert x.timestamps_ns is None and y.timestamps_ns is None
        assert x.quality is None and y.quality is None
        assert not x.values.flags.writeable


def a_frame(rng: np.random.Generator, count: int, n: int) -> Frame:
    t0 = 1_800_000_000_000_000_000 + int(rng.integers(0, 10**9))
    series = []
    for i in range(count):
        code = DTYPES[int(rng.integers(len(DTYPES)))]
        dtype = np.dtype("<" + code)
        if dtype.kind == "f":
            values = rng.normal(0, 100, n).astype(dtype)
        else:
            info = np.iinfo(dtype)
            values = rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), n).astype(dtype)
        series.append(Series(f"s{i}.x", values, t0, 1_000_000))
    return Frame("line-1", int(rng.integers(0, 2**40)), tuple(series), 123)


@pytest.mark.parametrize("compact", [False, True], ids=["VTF1", "VTF2"])
@pytest.mark.parametrize("shuffled", [False, True])
def test_regular_frames_decode_in_one_go_to_what_the_general_decoder_gives(
    shuffled, compact
) -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        frame = a_frame(rng, int(rng.integers(1, 20)), int(rng.integers(1, 40)))
        data = encode_binary(frame, shuffled=shuffled, compact=compact)
        assert data[:4] == (frames.MAGIC_COMPACT if compact else frames.MAGIC)
        reference = general(data)  # also makes the ids known (as the first frame of a stream)
        fast = regular(data)
        assert fast is not None
        same(fast, reference)
        same(fast, Frame(frame.stream_id, frame.seq, frame.series, frame.sent_ns))
        some = {s.sensor_id for s in frame.series[::2]}
        partial = regular(data, some, True)
        assert partial is not None
        same(partial, general(data, some, finite=True))
        assert len(partial.complete().series) == len(frame.series)


def test_anything_else_is_left_to_the_general_decoder() -> None:
    t0 = 1_800_000_000_000_000_000
    ok = Frame("line-1", 1, (Series("a", np.arange(5.0), t0, 10), Series("b", np.ones(5), t0, 10)))
    data = encode_binary(ok, compact=False)
    general(data)
    assert regular(data) is not None
    header, pos = frames._header(data)

    def tried(**change: object) -> Frame | None:
        h = {**header, **change}
        packed = msgpack.packb(h)
        again = frames.MAGIC + len(packed).to_bytes(4, "little") + packed + data[pos:]
        return regular(again)

    metas = header["sensors"]
    assert tried(sensors=[metas[0], {**metas[1], "t0": t0 + 1}]) is None  # two clocks
    assert tried(sensors=[metas[0], {**metas[1], "q": True}]) is None
    assert tried(sensors=[metas[0], {**metas[1], "n": True}]) is None  # a bool is no count
    assert tried(sensors=[metas[0], {**metas[1], "id": "unseen"}]) is None
    assert tried(sensors=[metas[0], metas[0]]) is None  # ids repeat
    assert tried(sensors=[]) is None
    assert tried(v=2) is None and tried(layout="zipped") is None and tried(seq=-1) is None
    assert (
        tried(note="x") is None and tried(sensors=[metas[0], {**metas[1], "unit": "bar"}]) is None
    )
    assert tried(seq=True) is None and tried(stream_id=b"line-1") is None  # types, checked in C
    assert regular(data + b"\0") is None  # bytes left over
    # a NaN where finite values are asked for: the general decoder names the sensor and sample
    nan = Frame("line-1", 2, (Series("a", np.array([1.0, np.nan]), t0, 10),))
    raw = encode_binary(nan, shuffled=True)
    general(raw)
    assert regular(raw) is not None and regular(raw, finite=True) is None
    with pytest.raises(FrameError) as caught:
        decode_binary(raw, finite=True)
    assert caught.value.field.startswith("sensors[0]")


def _not_again(data: bytes) -> None:
    raise AssertionError("the header was parsed again")


@pytest.mark.parametrize("compact", [False, True], ids=["VTF1", "VTF2"])
def test_a_frame_decoded_in_part_is_peeked_at_without_parsing_its_header_again(compact) -> None:
    from schemas import frame_regular

    rng = np.random.default_rng(9)
    for shuffled in (False, True):
        frame = a_frame(rng, 6, 12)
        data = encode_binary(frame, shuffled=shuffled, compact=compact)
        general(data)
        parsed = frames.peek_regular(data, one_dtype=False)  # from the header
        assert parsed is not None
        part = decode_binary(data, ())  # in part: its body is read next
        assert part.span is not None and part.span.header is not None
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(frame_regular, "_typed_header", _not_again)
            mp.setattr(frame_regular, "_compact_header", _not_again)
            kept = frames.regular_of(part)  # the header as parsed when it was decoded
        assert kept == parsed
        for a, b in zip(kept.rows(), parsed.rows(), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        # asked for one dtype, a frame of several is still not regular
        assert (frames.peek_regular(data) is None) == (len(set(kept.dtypes)) > 1)
        assert frames.regular_of(decode_binary(data)) is None  # nothing left undecoded


def _compact(data: bytes, table_change=None, **change: object) -> bytes:
    """``data`` (a compact frame) with header fields or its table changed."""
    header, pos = frames._header(data)
    if table_change is not None:
        table = msgpack.unpackb(header["table"])
        header["table"] = msgpack.packb(table_change(table))
    packed = msgpack.packb({**header, **change})
    return frames.MAGIC_COMPACT + len(packed).to_bytes(4, "little") + packed + data[pos:]


@pytest.mark.parametrize(
    ("tampered", "field"),
    [
        (lambda d: _compact(d, v=1), "v"),
        (lambda d: _compact(d, dt=0), "dt"),
        (lambda d: _compact(d, n=0), "n"),
        (lambda d: _compact(d, n=6), "sensors[1].n"),  # the body ends within the second
        (lambda d: _compact(d, table=b"\xc1"), "table"),
        (lambda d: _compact(d, table=b"\x91\x01"), "table"),  # a list, not a map
        (lambda d: _compact(d, lambda t: {**t, "dtypes": ["f8"]}), "table.dtypes"),
        (lambda d: _compact(d, lambda t: {**t, "dtypes": ["f8", "c16"]}), "sensors[1].dtype"),
        (lambda d: _compact(d, lambda t: {**t, "ids": ["a", "a"]}), "sensors"),
        (lambda d: _compact(d, lambda t: {**t, "ids": ["a", "b c"]}), "sensors[1].id"),
        (lambda d: _compact(d, lambda t: {**t, "stream_id": 7}), "table.stream_id"),
        (lambda d: d + b"\0", "frame"),
    ],
)
def test_a_compact_frame_that_is_wrong_is_refused_naming_the_field(tampered, field) -> None:
    t0 = 1_800_000_000_000_000_000
    ok = Frame("line-2", 1, (Series("a", np.arange(5.0), t0, 10), Series("b", np.ones(5), t0, 10)))
    data = encode_binary(ok, shuffled=True)
    assert data[:4] == frames.MAGIC_COMPACT and regular(data) is not None
    bad = tampered(data)
    assert regular(bad) is None  # left to the general decoder, which says what is wrong
    with pytest.raises(FrameError) as caught:
        decode_binary(bad)
    assert caught.value.field == field, caught.value


def test_frames_that_are_not_regular_keep_a_header_entry_per_sensor() -> None:
    """Two clocks, qualities or explicit timestamps: the compact form cannot say them."""
    t0 = 1_800_000_000_000_000_000
    a = Series("a", np.arange(5.0), t0, 10)
    for other in (
        Series("b", np.ones(5), t0 + 1, 10),  # another clock
        Series("b", np.ones(5), t0, 10, None, np.full(5, 64, dtype=np.uint8)),  # qualities
        Series("b", np.ones(3), t0, 0, np.array([t0, t0 + 7, t0 + 9])),  # explicit times
    ):
        frame = Frame("line-3", 2, (a, other))
        data = encode_binary(frame, shuffled=True)
        assert data[:4] == frames.MAGIC
        assert decode_binary(data).equals(frame)


def test_a_compact_frame_is_smaller_and_its_table_is_read_once() -> None:
    from schemas import frame_regular

    rng = np.random.default_rng(11)
    frame = a_frame(rng, 17, 10)
    compact, wide = (
        encode_binary(frame, shuffled=True),
        encode_binary(frame, shuffled=True, compact=False),
    )
    assert len(compact) < len(wide) - 17 * 20  # at least 20 bytes less per sensor
    decode_binary(compact)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(frame_regular, "_read_table", _not_again)  # the same table: known by its bytes
        again = Frame(frame.stream_id, frame.seq + 1, frame.series, 5)
        same(regular(encode_binary(again, shuffled=True)), again)
