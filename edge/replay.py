"""Replay of the hydraulic test-rig data set (1 Hz channels, one 60 s cycle per row) as a live
stream: frames of its eight channels plus a digital ``cycle_active`` input that is 1 during each
replayed cycle and 0 for one second between cycles. The stream's cycle trigger is set to that
input, so the running system cuts, records and analyses every replayed cycle however far the
replay runs ahead of real time.

Files: TS1..TS4, VS1, CE, CP, SE (.txt, tab separated, one row per cycle, one column per
second), profile.txt (component conditions per row), cycle_index.txt (original cycle numbers).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.client import Bus, ask, through_outage
from edge.publisher import FramePublisher
from edge.registry_client import register_stream, release_frames, reserve_frames
from schemas import subjects
from schemas.frames import Frame, Series
from schemas.messages import CycleConfig, SensorSpec, StreamRegistration
from schemas.timeutil import NS

CYCLE_S = 60
SLOT_S = CYCLE_S + 1  # one idle second between replayed cycles
ACTIVE = "cycle_active"
SENSORS: dict[str, tuple[str, str, str]] = {
    "TS1": ("temperature", "°C", "Temperature 1"),
    "TS2": ("temperature", "°C", "Temperature 2"),
    "TS3": ("temperature", "°C", "Temperature 3"),
    "TS4": ("temperature", "°C", "Temperature 4"),
    "VS1": ("vibration", "mm/s", "Vibration"),
    "CE": ("efficiency", "%", "Cooling efficiency (virtual)"),
    "CP": ("power", "kW", "Cooling power (virtual)"),
    "SE": ("efficiency", "%", "Efficiency factor"),
}


class DataSetError(ValueError):
    """The folder does not hold the hydraulic data set; the message says what is missing."""


@dataclass(frozen=True)
class HydraulicData:
    values: dict[str, npt.NDArray[np.float64]]  # sensor -> (cycles, 60)
    profile: npt.NDArray[np.int64]  # (cycles, 5): cooler, valve, pump leakage, accumulator, stable
    original: npt.NDArray[np.int64]  # original cycle number of each row

    def rows(
        self,
        cooler: int | None = None,
        valve: int | None = None,
        pump: int | None = None,
        accumulator: int | None = None,
        stable: int | None = None,
    ) -> npt.NDArray[np.int64]:
        """Row numbers whose conditions match every given value."""
        mask = np.ones(len(self.profile), dtype=bool)
        for col, want in enumerate((cooler, valve, pump, accumulator, stable)):
            if want is not None:
                mask &= self.profile[:, col] == want
        return np.flatnonzero(mask)


def load_hydraulic(folder: Path) -> HydraulicData:
    """Read the data set, checking every file is there and shaped alike."""
    missing = [
        f"{n}.txt"
        for n in [*SENSORS, "profile", "cycle_index"]
        if not (folder / f"{n}.txt").exists()
    ]
    if missing:
        raise DataSetError(f"{folder} lacks {', '.join(missing)}")
    values = {s: np.loadtxt(folder / f"{s}.txt", ndmin=2) for s in SENSORS}
    shapes = {s: v.shape for s, v in values.items()}
    if len(set(shapes.values())) != 1 or next(iter(shapes.values()))[1] != CYCLE_S:
        raise DataSetError(f"channel files differ in shape or are not 60 columns wide: {shapes}")
    profile = np.loadtxt(folder / "profile.txt", ndmin=2).astype(np.int64)
    original = np.loadtxt(folder / "cycle_index.txt", ndmin=1).astype(np.int64)
    return HydraulicData(values, profile, original)


def registration(stream_id: str) -> StreamRegistration:
    return StreamRegistration(
        device_name="Hydraulic test rig (replay)",
        stream_id=stream_id,
        description="ZeMA hydraulic condition monitoring data set, 1 Hz channels",
        sensors=[
            *(
                SensorSpec(id=s, name=name, type=kind, unit=unit, rate_hz=1.0)
                for s, (kind, unit, name) in SENSORS.items()
            ),
            SensorSpec(id=ACTIVE, name="Cycle active", type="digital", rate_hz=1.0),
        ],
    )


def trigger() -> CycleConfig:
    """The cycle trigger a replayed stream uses."""
    return CycleConfig(
        trigger="signal", signal_sensor=ACTIVE, start_above=0.5, stop_below=0.5, gap_timeout_s=3600
    )


def cycle_frames(
    data: HydraulicData,
    row: int,
    stream_id: str,
    start_ns: int,
    first_seq: int,
    frame_s: int,
    lead_idle: bool = False,
) -> list[Frame]:
    """The frames of one replayed cycle starting at ``start_ns``; the last one also carries the
    idle second after the cycle, where ``cycle_active`` drops to 0 (and with ``lead_idle`` the
    first one the idle second before it, so the very first cycle starts on a rising edge)."""
    frames = []
    offsets = list(range(0, CYCLE_S, frame_s))
    for i, offset in enumerate(offsets):
        series = [
            Series(
                s,
                data.values[s][row, offset : offset + frame_s].astype("f4"),
                start_ns + offset * NS,
                NS,
            )
            for s in SENSORS
        ]
        ts = start_ns + (offset + np.arange(frame_s, dtype=np.int64)) * NS
        active = np.ones(frame_s, dtype=np.uint8)
        if i == 0 and lead_idle:
            ts, active = np.insert(ts, 0, start_ns - NS), np.insert(active, 0, 0)
        if i == len(offsets) - 1:
            ts, active = np.append(ts, start_ns + CYCLE_S * NS), np.append(active, np.uint8(0))
        series.append(Series(ACTIVE, active, int(ts[0]), 0, ts))
        frames.append(Frame(stream_id, first_seq + i, tuple(series), time.time_ns()))
    return frames


async def set_trigger(bus: Bus, stream_id: str) -> None:
    """Ask the cycles service (which owns cycle settings) to start and end the stream's cycles
    on ``cycle_active``."""
    subject = subjects.cycle_control(stream_id, "config")
    status, body = await ask(bus.nc, subject, trigger().model_dump_json().encode(), 10)
    if status != 200:
        raise ValueError(f"the cycles service refused the trigger ({status}): {body.decode()}")


async def replay_hydraulic(
    bus: Bus,
    data: HydraulicData,
    rows: list[int],
    *,
    stream_id: str = "hydraulic-rig",
    speed: float = 0.0,
    frame_s: int = 10,
    start_ns: int | None = None,
) -> int:
    """Publish ``rows`` as consecutive cycles; returns the number of frames sent.

    ``speed`` 1 is real time (61 s a cycle), 0 as fast as the bus takes it. Sets the stream's
    cycle trigger to ``cycle_active``.
    """
    if CYCLE_S % frame_s:
        raise ValueError(f"frame_s must divide {CYCLE_S}")
    # until the services answer (and have declared the buckets), this waits like an outage
    await through_outage("registering", lambda: register_stream(bus, registration(stream_id)))
    await through_outage("setting the cycle trigger", lambda: set_trigger(bus, stream_id))
    start = start_ns if start_ns is not None else time.time_ns() // NS * NS
    per_cycle = CYCLE_S // frame_s
    first = await through_outage(
        "reserving seq", lambda: reserve_frames(bus, stream_id, per_cycle * len(rows))
    )
    publisher = FramePublisher(bus.js)
    wall0 = time.monotonic()
    sent = 0
    for k, row in enumerate(rows):
        t0 = start + k * SLOT_S * NS
        for frame in cycle_frames(
            data, row, stream_id, t0, first + k * per_cycle, frame_s, lead_idle=k == 0
        ):
            if speed > 0:
                due = wall0 + (frame.series[0].last_ns() - start) / NS / speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await publisher.publish(frame)
            sent += 1
    await publisher.flush()
    await through_outage(
        "releasing seq",
        lambda: release_frames(bus, stream_id, first + per_cycle * len(rows), first + sent),
    )
    return sent
