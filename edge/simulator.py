"""A simulated cyclic machine: pure signal generation, no clock and no I/O.

The machine repeats a cycle of ``cycle_s`` seconds: idle, ramp up, hold, ramp down, idle. Every
sensor follows that profile scaled to its own base and amplitude, plus white noise, a slow drift
of the operating point and, with ``jitter``, cycle-to-cycle variation as real machines show (each
cycle runs a little early or late and a little stronger or weaker). Faults change one sensor from
a given cycle on: ``offset`` (constant shift), ``drift`` (growing shift), ``noise`` (more noise),
``spike`` (short spikes), ``lag`` (the sensor's profile runs late) and ``stuck`` (the value
freezes). Sensors can have different rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas.frames import Frame, Series
from schemas.messages import SensorSpec, StreamRegistration
from schemas.timeutil import NS

FaultKind = Literal["offset", "drift", "noise", "spike", "lag", "stuck"]
FAULT_KINDS: tuple[str, ...] = ("offset", "drift", "noise", "spike", "lag", "stuck")
# (type, unit, base, amplitude) by sensor position, repeated for larger machines
_KINDS = (
    ("pressure", "bar", 5.0, 150.0),
    ("pressure", "bar", 3.0, 80.0),
    ("flow", "l/min", 0.5, 40.0),
    ("position", "mm", 0.0, 250.0),
    ("vibration", "mm/s", 0.8, 2.5),
    ("power", "kW", 1.0, 12.0),
    ("temperature", "°C", 38.0, 6.0),
    ("temperature", "°C", 42.0, 3.0),
)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault injected into ``sensor_id`` from cycle ``start_cycle`` on."""

    sensor_id: str
    kind: FaultKind
    magnitude: float = 1.0
    start_cycle: int = 0

    @staticmethod
    def parse(text: str) -> Fault:
        """Parse ``sensor:kind[:magnitude[:start_cycle]]``, e.g. ``pressure_1:offset:5:2``."""
        parts = text.split(":")
        if len(parts) < 2 or parts[1] not in FAULT_KINDS:
            raise ValueError(
                f"fault {text!r}: expected sensor:kind[:magnitude[:start_cycle]] "
                f"with kind one of {', '.join(FAULT_KINDS)}"
            )
        try:
            magnitude = float(parts[2]) if len(parts) > 2 else 1.0
            start = int(parts[3]) if len(parts) > 3 else 0
        except ValueError as exc:
            raise ValueError(f"fault {text!r}: magnitude and start_cycle must be numbers") from exc
        return Fault(parts[0], parts[1], magnitude, start)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SensorModel:
    id: str
    type: str
    unit: str
    rate_hz: float
    base: float
    amplitude: float
    noise: float
    dtype: str = "f4"

    @property
    def period_ns(self) -> int:
        return round(NS / self.rate_hz)


@dataclass(frozen=True, slots=True)
class MachineModel:
    """What the simulated machine looks like."""

    stream_id: str = "sim-01"
    device_name: str = "Simulated press"
    sensors: tuple[SensorModel, ...] = ()
    cycle_s: float = 10.0
    drift_per_hour: float = 0.02  # share of amplitude the operating point moves per hour
    faults: tuple[Fault, ...] = ()
    seed: int = 7
    jitter: float = 0.0  # per cycle: timing shift (share of the cycle) and gain change, std

    def registration(self) -> StreamRegistration:
        return StreamRegistration(
            device_name=self.device_name,
            stream_id=self.stream_id,
            description="VerTac simulated machine",
            sensors=[
                SensorSpec(id=s.id, name=s.id.replace("_", " "), type=s.type, unit=s.unit,
                           rate_hz=s.rate_hz)
                for s in self.sensors
            ],
        )  # fmt: skip


def build_machine(
    *,
    stream_id: str = "sim-01",
    sensors: int = 8,
    rate_hz: float = 100.0,
    slow_rate_hz: float = 1.0,
    cycle_s: float = 10.0,
    noise: float = 0.01,
    drift_per_hour: float = 0.02,
    faults: tuple[Fault, ...] = (),
    seed: int = 7,
    active_signal: bool = False,
    jitter: float = 0.0,
) -> MachineModel:
    """A machine with ``sensors`` sensors; temperatures sample at ``slow_rate_hz``. With
    ``active_signal`` it also has a digital ``cycle_active`` input (1 while the machine works)."""
    if sensors < 1:
        raise ValueError("sensors must be >= 1")
    models = []
    counts: dict[str, int] = {}
    for i in range(sensors):
        kind, unit, base, amp = _KINDS[i % len(_KINDS)]
        counts[kind] = counts.get(kind, 0) + 1
        rate = slow_rate_hz if kind == "temperature" else rate_hz
        models.append(
            SensorModel(f"{kind}_{counts[kind]}", kind, unit, rate, base, amp, noise * amp)
        )
    if active_signal:
        models.append(SensorModel("cycle_active", "digital", "", rate_hz, 0.0, 1.0, 0.0, "u1"))
    known = {m.id for m in models}
    for f in faults:
        if f.sensor_id not in known:
            raise ValueError(f"fault names sensor {f.sensor_id!r}; sensors are {sorted(known)}")
    return MachineModel(
        stream_id=stream_id,
        sensors=tuple(models),
        cycle_s=cycle_s,
        drift_per_hour=drift_per_hour,
        faults=faults,
        seed=seed,
        jitter=jitter,
    )


def profile(phase: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The cycle shape over phase 0..1: idle, ramp up, hold, ramp down, idle."""
    up = np.clip((phase - 0.1) / 0.15, 0, 1)
    down = np.clip((0.8 - phase) / 0.15, 0, 1)
    return np.minimum(up, down)


@dataclass
class Simulation:
    """Generates consecutive frames of a :class:`MachineModel` from a start time."""

    model: MachineModel
    start_ns: int
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.model.seed)

    def variation(
        self, cycle_no: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per sample, its cycle's timing shift (share of the cycle) and gain, the same for every
        sensor and every frame of that cycle (drawn from the seed and the cycle number)."""
        shift = np.zeros(len(cycle_no))
        gain = np.ones(len(cycle_no))
        if self.model.jitter <= 0 or len(cycle_no) == 0:
            return shift, gain
        numbers, where = np.unique(cycle_no.astype(np.int64), return_inverse=True)
        draws = np.array(
            [np.random.default_rng((self.model.seed, int(c) & 0xFFFFFFFF)).normal(size=2)
             for c in numbers]
        )  # fmt: skip
        return draws[where, 0] * self.model.jitter, 1.0 + draws[where, 1] * self.model.jitter

    def cycle_of(self, t_ns: int) -> int:
        return int((t_ns - self.start_ns) // round(self.model.cycle_s * NS))

    def series(self, sensor: SensorModel, from_ns: int, to_ns: int) -> Series:
        """Samples of ``sensor`` with timestamps in [from_ns, to_ns), on its own rate grid."""
        period = sensor.period_ns
        first = -(-(from_ns - self.start_ns) // period)
        last = -(-(to_ns - self.start_ns) // period)
        k = np.arange(first, last, dtype=np.int64)
        t = self.start_ns + k * period
        elapsed = (t - self.start_ns) / NS
        cycle_no = np.floor(elapsed / self.model.cycle_s)
        shift = np.zeros_like(elapsed)
        extra_noise = np.zeros_like(elapsed)
        gain_offset = np.zeros_like(elapsed)
        stuck = np.zeros(len(t), dtype=bool)
        for f in self.model.faults:
            if f.sensor_id != sensor.id:
                continue
            active = cycle_no >= f.start_cycle
            if f.kind == "lag":
                shift = np.where(active, f.magnitude / self.model.cycle_s * 0.05, shift)
            elif f.kind == "offset":
                gain_offset += np.where(active, f.magnitude, 0.0)
            elif f.kind == "drift":
                since = np.maximum(cycle_no - f.start_cycle + 1, 0)
                gain_offset += np.where(active, f.magnitude * since, 0.0)
            elif f.kind == "noise":
                extra_noise = np.where(active, f.magnitude * sensor.noise, extra_noise)
            elif f.kind == "spike":
                spikes = self.rng.random(len(t)) < 0.01
                gain_offset += np.where(active & spikes, f.magnitude * sensor.amplitude * 0.2, 0.0)
            elif f.kind == "stuck":
                stuck |= active
        phase = (elapsed / self.model.cycle_s) % 1.0
        jitter_shift, gain = self.variation(cycle_no)
        shape = gain * profile((phase - shift - jitter_shift) % 1.0)
        drift = self.model.drift_per_hour * sensor.amplitude * elapsed / 3600.0
        noise = self.rng.normal(0.0, 1.0, len(t)) * (sensor.noise + extra_noise)
        if sensor.type == "digital":
            return Series(sensor.id, (shape > 0).astype(np.uint8), int(t[0]) if len(t) else from_ns,
                          period)  # fmt: skip
        values = sensor.base + sensor.amplitude * shape + drift + noise + gain_offset
        if stuck.any():
            frozen_at = np.argmax(stuck)
            values[stuck] = values[frozen_at - 1] if frozen_at > 0 else values[frozen_at]
        return Series(sensor.id, values.astype(sensor.dtype), int(t[0]) if len(t) else from_ns,
                      period)  # fmt: skip

    def frame(self, seq: int, from_ns: int, to_ns: int, sent_ns: int = 0) -> Frame:
        """One frame with every sensor's samples in [from_ns, to_ns)."""
        all_series = [self.series(s, from_ns, to_ns) for s in self.model.sensors]
        # slow sensors have no sample in most short frames; leave them out of those
        present = tuple(s for s in all_series if s.n) or tuple(all_series)
        return Frame(self.model.stream_id, seq, present, sent_ns)
