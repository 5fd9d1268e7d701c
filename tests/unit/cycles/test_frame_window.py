"""The cycles service's in-memory window of frames: it answers only for ranges it holds whole,
and everything else is read back from the bus."""

from __future__ import annotations

import numpy as np

from schemas import subjects
from schemas.frames import Frame, Series
from services.cycles.handlers import FrameWindow


def frame(seq: int, n: int = 10) -> Frame:
    return Frame("m1", seq, (Series("p", np.arange(n, dtype="f4"), seq * 1000, 10),))


def test_a_range_held_whole_comes_from_memory_in_bus_order() -> None:
    w = FrameWindow()
    for js, seq in ((100, 0), (101, 1), (103, 3), (102, 2)):
        w.add("m1", js, frame(seq))
    w.add("m1", 101, frame(1))  # a redelivery replaces itself
    got = w.between("m1", 101, 103)
    assert got is not None and [f.seq for f in got] == [1, 2, 3]


def test_a_range_not_held_whole_is_not_answered() -> None:
    w = FrameWindow()
    w.add("m1", 105, frame(5))
    w.add("m1", 106, frame(6))
    assert w.between("m1", 104, 106) is None  # began before the window
    assert w.between("m1", 105, 107) is None  # ends past what arrived
    assert w.between("other", 1, 2) is None


def test_trimming_and_the_size_limit_keep_memory_bounded() -> None:
    w = FrameWindow(max_samples=50)
    for js in range(10):
        w.add("m1", js, frame(js))  # 100 samples > 50: dropped, read back instead
    assert w.between("m1", 0, 9) is None and w.samples.get("m1", 0) <= 50
    w.keep_after("m1", 9)  # idle: the next cycle starts from here
    w.add("m1", 10, frame(10))
    w.add("m1", 11, frame(11))
    got = w.between("m1", 10, 11)
    assert got is not None and len(got) == 2


def test_a_partition_taken_over_is_forgotten() -> None:
    w = FrameWindow()
    w.add("m1", 1, frame(1))
    w.forget(subjects.partition_of("m1"))
    assert w.between("m1", 1, 1) is None
