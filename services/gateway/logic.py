"""Pure logic of the gateway: REST batches to frames, and min/max decimation for screens."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ValidationError

from schemas.compat import LegacyBatch, quality_code
from schemas.frames import (
    INT64_MAX,
    MAGIC,
    MAGIC_COMPACT,
    QUALITY_GOOD,
    Frame,
    Series,
    decode,
    peek_regular,
)
from schemas.messages import (
    AlertGroup,
    BatchRequest,
    BatchSample,
    CycleOverlay,
    OverlaySensor,
    ReferenceInfo,
    SensorSpec,
    WsCommand,
    WsSamples,
    WsSensorTrace,
)
from schemas.timeutil import ns_of, ns_of_seconds
from services.gateway.csvtext import cell


class UnknownSensor(ValueError):
    def __init__(
        self, field: str, sensor_id: str, known: list[str], message: str | None = None
    ) -> None:
        super().__init__(
            message or f"sensor {sensor_id!r} is not registered for this stream; known: {known}"
        )
        self.field = field


def to_ns(timestamp: datetime | float) -> int:
    """Nanoseconds since the Unix epoch of an ISO time or of seconds as a number."""
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("timestamp needs a time zone (e.g. 'Z' or '+01:00')")
        return ns_of(timestamp)
    return ns_of_seconds(float(timestamp))


def legacy_batch(batch: LegacyBatch, sensors: list[SensorSpec]) -> BatchRequest:
    """A v0.2.0 batch (one record per sample) as today's columnar batch. Each record names its
    sensor by ``sensor_id`` (a registered id) or, without one, ``sensor_name`` (a registered id or
    name); a
    given ``unit`` must be the registered one; quality 0-1 becomes an OPC DA code
    (:func:`schemas.compat.quality_code`). Raises :class:`UnknownSensor` naming the field."""
    by_id = {s.id: s for s in sensors}
    by_name = {s.name: s for s in sensors if s.name}
    known = sorted(by_id)
    out = []
    for i, sample in enumerate(batch.samples):
        if sample.sensor_id:  # the sensor's identity; its name is only used without it
            spec = by_id.get(sample.sensor_id)
        else:
            name = sample.sensor_name or ""
            spec = by_id.get(name) or by_name.get(name)
        if spec is None:
            field = "sensor_id" if sample.sensor_id else "sensor_name"
            raise UnknownSensor(f"samples.{i}.{field}", sample.sensor_id or sample.sensor_name
                                or "", known)  # fmt: skip
        if sample.unit and spec.unit and sample.unit != spec.unit:
            raise UnknownSensor(
                f"samples.{i}.unit", spec.id, known,
                message=f"sensor {spec.id!r} is registered in {spec.unit!r}, not {sample.unit!r}",
            )  # fmt: skip
        out.append(
            BatchSample(
                timestamp=sample.timestamp,
                values={spec.id: sample.value},
                quality={spec.id: quality_code(sample.quality)},
            )
        )
    return BatchRequest(stream_id=batch.stream_id, samples=out, batch_id=batch.batch_id)


def split_batch(batch: BatchRequest, max_samples: int) -> list[BatchRequest]:
    """``batch`` in consecutive parts of at most ``max_samples`` values each (a sample row is
    never split, so a row of more values than that is a part of its own)."""
    parts: list[BatchRequest] = []
    rows: list[Any] = []
    count = 0
    for sample in batch.samples:
        n = len(sample.values)
        if rows and count + n > max_samples:
            parts.append(batch.model_copy(update={"samples": rows}))
            rows, count = [], 0
        rows.append(sample)
        count += n
    if rows or not parts:
        parts.append(batch.model_copy(update={"samples": rows}))
    return parts


class BadTimestamp(ValueError):
    """A batch sample's timestamp (or value) that no frame can carry; ``field`` names it."""

    def __init__(self, index: int, reason: str, field: str = "timestamp") -> None:
        self.field = f"samples.{index}.{field}"
        super().__init__(f"{self.field} {reason}")


def batch_to_frame(
    batch: BatchRequest, seq: int, sent_ns: int, sensors: list[SensorSpec] | None
) -> Frame:
    """One frame from a REST batch: one series per sensor with explicit timestamps.

    Raises :class:`UnknownSensor` naming the field when ``sensors`` is given and a value names a
    sensor that is not in it.
    """
    known = {s.id for s in sensors} if sensors is not None else None
    times: dict[str, list[int]] = defaultdict(list)
    values: dict[str, list[float]] = defaultdict(list)
    quality: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(batch.samples):
        try:
            t = to_ns(sample.timestamp)
        except OverflowError as exc:  # inf, 1e300
            raise BadTimestamp(i, "is not a finite time") from exc
        if not 0 <= t <= INT64_MAX:  # ns since 1970 in 64 bits
            raise BadTimestamp(i, "is outside 1970-01-01 .. 2262-04-11 (ns since 1970 in 64 bits)")
        q = sample.quality or {}
        for sensor_id, value in sample.values.items():
            if known is not None and sensor_id not in known:
                raise UnknownSensor(f"samples.{i}.values.{sensor_id}", sensor_id, sorted(known))
            if not math.isfinite(value) and q.get(sensor_id, QUALITY_GOOD) >= QUALITY_GOOD:
                raise BadTimestamp(
                    i,
                    f"is {value}: a NaN or infinite value needs a quality below "
                    f"{QUALITY_GOOD} (bad) in samples.{i}.quality.{sensor_id}",
                    f"values.{sensor_id}",
                )
            times[sensor_id].append(t)
            values[sensor_id].append(value)
            quality[sensor_id].append(q.get(sensor_id, QUALITY_GOOD))
    series = []
    for sensor_id in values:
        ts = np.asarray(times[sensor_id], dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        qs = np.asarray(quality[sensor_id], dtype=np.uint8)[order]
        series.append(
            Series(
                sensor_id,
                np.asarray(values[sensor_id], dtype=np.float64)[order],
                int(ts[order][0]),
                0,
                ts[order],
                None if bool((qs == QUALITY_GOOD).all()) else qs,
            )
        )
    return Frame(batch.stream_id, seq, tuple(series), sent_ns)


Buckets = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]


def min_max_buckets(t: npt.NDArray[np.int64], v: npt.NDArray[np.float64], buckets: int) -> Buckets:
    """Time (ms) of each bucket's first sample, and min, max and mean per bucket (NaN ignored
    by min and max; a bucket of only NaN has a NaN mean). ``v`` is one sensor's samples, or a
    matrix of sensors by samples reduced row by row at once."""
    n = v.shape[-1]
    b = max(1, min(buckets, n))
    starts = np.linspace(0, n, b + 1).astype(np.int64)[:-1]
    finite = np.isfinite(v)
    sums = np.add.reduceat(np.where(finite, v, 0.0), starts, axis=-1)
    counts = np.add.reduceat(finite, starts, axis=-1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    lo = np.fmin.reduceat(v, starts, axis=-1)
    hi = np.fmax.reduceat(v, starts, axis=-1)
    return t[starts] / 1e6, lo, hi, mean


class Decimator:
    """Collects frames between two WebSocket sends and reduces them to min/max buckets.

    Regular frames (every sensor on one clock, one dtype, all good: the edge's usual frames)
    are kept as one matrix each, sensors by samples, straight from the message body
    (:meth:`add_message`), and reduced all sensors at once; other frames sensor by sensor.
    """

    def __init__(self, stream_id: str, buckets: int) -> None:
        self.stream_id = stream_id
        self.buckets = buckets
        self._blocks: list[tuple[tuple[str, ...], npt.NDArray[np.int64], npt.NDArray[Any]]] = []
        self._t: dict[str, list[npt.NDArray[np.int64]]] = defaultdict(list)
        self._v: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)
        self._seq = -1
        self._sent_ms: list[float] = []

    def add(self, frame: Frame) -> None:
        for s in frame.series:
            if s.n:
                self._t[s.sensor_id].append(s.timestamps())
                self._v[s.sensor_id].append(s.values.astype(np.float64))
        self._saw(frame.seq, frame.sent_ns)

    def add_message(self, data: bytes, headers: dict[str, str] | None) -> None:
        """Add a samples message as it came from the bus (raises :class:`FrameError`)."""
        binary = data[:4] in (MAGIC, MAGIC_COMPACT)
        regular = peek_regular(data, one_dtype=False) if binary else None
        if regular is None:
            self.add(decode(data, headers))
            return
        if regular.n:
            t = regular.t0_ns + np.arange(regular.n, dtype=np.int64) * regular.period_ns
            self._blocks.append((regular.ids, t, regular.matrix()))
        self._saw(regular.seq, regular.sent_ns)

    def _saw(self, seq: int, sent_ns: int) -> None:
        self._seq = max(self._seq, seq)
        if sent_ns:
            self._sent_ms.append(sent_ns / 1e6)

    def _reduce(self) -> dict[str, dict[str, Any]] | None:
        """Per sensor: bucket times (ms), min, max, mean (arrays), last value and count."""
        blocks, self._blocks = self._blocks, []
        ids = {b[0] for b in blocks}
        if len(ids) == 1 and not self._v:  # the usual case: one matrix for every sensor
            names = blocks[0][0]
            t = np.concatenate([b[1] for b in blocks])
            v = np.concatenate([b[2] for b in blocks], axis=1)
            if len(t) > 1 and np.any(t[1:] < t[:-1]):
                order = np.argsort(t, kind="stable")
                t, v = t[order], v[:, order]
            t_ms, lo, hi, mean = min_max_buckets(t, v, self.buckets)
            return {
                sid: {"t_ms": t_ms, "min": lo[r], "max": hi[r], "last": float(v[r, -1]),
                      "count": len(t), "mean": mean[r]}
                for r, sid in enumerate(names)
            }  # fmt: skip
        for names, t, values in blocks:  # frames of several shapes: sensor by sensor
            for r, sid in enumerate(names):
                self._t[sid].append(t)
                self._v[sid].append(values[r].astype(np.float64))
        if not self._v:
            return None
        traces = {}
        for sensor_id, chunks in self._v.items():
            v = np.concatenate(chunks)
            t = np.concatenate(self._t[sensor_id])
            if len(t) > 1 and np.any(t[1:] < t[:-1]):
                order = np.argsort(t, kind="stable")
                t, v = t[order], v[order]
            t_ms, lo, hi, mean = min_max_buckets(t, v, self.buckets)
            traces[sensor_id] = {"t_ms": t_ms, "min": lo, "max": hi, "last": float(v[-1]),
                                 "count": len(v), "mean": mean}  # fmt: skip
        self._t.clear()
        self._v.clear()
        return traces

    def flush(self) -> WsSamples | None:
        """What arrived since the last flush, as a message (None when nothing did)."""
        traces = self._reduce()
        sent, self._sent_ms = self._sent_ms, []
        if traces is None:
            return None
        return WsSamples(
            stream_id=self.stream_id,
            seq=self._seq,
            sensors={sid: WsSensorTrace(**{k: v.tolist() if isinstance(v, np.ndarray) else v
                                           for k, v in tr.items()})
                     for sid, tr in traces.items()},
            sent_ms=sent,
        )  # fmt: skip

    def flush_text(self) -> str | None:
        """:meth:`flush` as the WebSocket text :func:`envelope` makes of it, encoded straight
        from the arrays (NaN as null, as pydantic writes it)."""
        traces = self._reduce()
        sent, self._sent_ms = self._sent_ms, []
        if traces is None:
            return None
        data = {"stream_id": self.stream_id, "seq": self._seq, "sensors": traces, "sent_ms": sent}
        body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        return f'{{"type":"samples","timestamp":"{_now_iso()}","data":{body}}}'


def recording_csv(frame: Frame) -> str:
    """A recorded cycle as CSV, one row per sample: timestamp_ns, time (UTC), sensor, value,
    quality. Built column-wise with numpy string operations."""
    add = np.strings.add
    parts = []
    for s in frame.series:
        if not s.n:
            continue
        ts = s.timestamps()
        iso = np.datetime_as_string(ts.astype("datetime64[ns]"), unit="ms")
        row = add(add(ts.astype(str), ","), add(iso, "Z,"))
        row = add(add(row, cell(s.sensor_id) + ","), s.values.astype(np.float64).astype(str))
        parts.append(add(add(row, ","), s.qualities().astype(str)))
    body = "\n".join(np.concatenate(parts).tolist()) if parts else ""
    return "timestamp_ns,time_utc,sensor_id,value,quality\n" + body + ("\n" if body else "")


def recording_json(frame: Frame) -> dict[str, dict[str, list[float] | list[int]]]:
    """A recorded cycle as JSON-ready columns per sensor."""
    return {
        s.sensor_id: {
            "timestamps_ns": s.timestamps().tolist(),
            "values": s.values.astype(np.float64).tolist(),
            "quality": s.qualities().tolist(),
        }
        for s in frame.series
        if s.n
    }


def thin(
    t: npt.NDArray[np.float64], v: npt.NDArray[np.float64], points: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """At most ``points`` points: the mean time and value of equal runs of samples."""
    n = len(v)
    if n <= points:
        return t, v
    edges = np.linspace(0, n, points + 1).astype(np.int64)
    counts = np.diff(edges)
    starts = edges[:-1]
    return np.add.reduceat(t, starts) / counts, np.add.reduceat(v, starts) / counts


def cycle_overlay(
    cycle_id: str,
    recording: Frame,
    reference: ReferenceInfo | None,
    order: list[str],
    units: dict[str, str],
    points: int,
) -> CycleOverlay:
    """Every sensor of a recorded cycle, thinned to ``points``, with the reference's mean and
    envelope stretched over the cycle's duration and put on the cycle's own points: the one
    geometry that the dashboard and the PDF report both draw. Sensors in ``order`` come first
    (the analysis ranking), the rest after it."""
    curves = {c.sensor_id: c for c in (reference.curves or [])} if reference else {}
    series = {s.sensor_id: s for s in recording.series if s.n}
    names = [s for s in order if s in series] + [s for s in series if s not in order]
    start = min((s.first_ns() for s in series.values()), default=0)
    out = []
    for sensor_id in names:
        s = series[sensor_id]
        t = (s.timestamps() - start).astype(np.float64) / 1e9
        tt, vv = thin(t, s.values.astype(np.float64), points)
        ref = curves.get(sensor_id)
        extra: dict[str, list[float]] = {}
        if ref is not None and ref.mean:
            x = np.linspace(0.0, float(t[-1]), len(ref.mean))
            extra = {
                "ref_t_s": tt.tolist(),
                "ref_mean": np.interp(tt, x, ref.mean).tolist(),
                "ref_lower": np.interp(tt, x, ref.lower).tolist(),
                "ref_upper": np.interp(tt, x, ref.upper).tolist(),
            }
        unit = units.get(sensor_id) or (ref.unit if ref else "")
        out.append(
            OverlaySensor(
                sensor_id=sensor_id, unit=unit, t_s=tt.tolist(), value=vv.tolist(), **extra
            )
        )
    version = reference.reference_version if reference else None
    return CycleOverlay(cycle_id=cycle_id, reference_version=version, sensors=out)


SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def group_alerts(rows: list[dict[str, Any]]) -> list[AlertGroup]:
    """Alert rows (as ``AlertQueries.find`` gives them, newest first) grouped by severity, rule
    and sensor; critical first, then by how often they fired."""
    groups: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for r in rows:
        key = (r["severity"], r["rule"], r["sensor_id"])
        g = groups.setdefault(key, {
            "severity": r["severity"], "rule": r["rule"], "kind": r["rule_kind"] or r["rule"],
            "sensor_id": r["sensor_id"], "alerts": 0, "occurrences": 0,
            "first_raised_at": r["raised_at"], "last_message": r["message"],
        })  # fmt: skip
        g["alerts"] += 1
        g["occurrences"] += r["occurrences"]
        g["first_raised_at"] = min(g["first_raised_at"], r["raised_at"])
    ordered = sorted(
        groups.values(), key=lambda g: (SEVERITY_ORDER.get(g["severity"], 3), -g["occurrences"])
    )
    return [AlertGroup.model_validate(g) for g in ordered]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(message: BaseModel) -> str:
    """A WebSocket message in the v0.2.0 envelope ``{"type", "timestamp", "data"}``: ``type``
    from the message, ``timestamp`` when the gateway sends it (ISO 8601, UTC, ms), ``data`` the
    message's other fields."""
    kind = getattr(message, "type")  # noqa: B009 - every WebSocket message model has one
    data = message.model_dump_json(exclude={"type"})
    return f'{{"type":"{kind}","timestamp":"{_now_iso()}","data":{data}}}'


class CommandError(ValueError):
    def __init__(self, message: str, field: str = "type") -> None:
        super().__init__(message)
        self.message, self.field = message, field


PLAIN_COMMANDS = ("ping", "cycle_start", "cycle_stop")


def parse_command(text: str) -> WsCommand:
    """A command from the browser: plain text (``ping``, ``cycle_start``, ``cycle_stop``, as
    v0.2.0 clients send), JSON ``{"type": ..., "reason": ...}``, or the envelope form
    ``{"type": ..., "data": {"reason": ...}}``."""
    word = text.strip()
    if word in PLAIN_COMMANDS:
        return WsCommand(type=word)
    if not word.startswith("{"):
        shown = word[:40] + ("..." if len(word) > 40 else "")
        raise CommandError(
            f"unknown command {shown!r}: send ping, cycle_start or cycle_stop, as plain text or "
            'as JSON {"type": "cycle_start", "reason": "..."}'
        )
    try:
        raw = json.loads(word)
    except ValueError as exc:
        raise CommandError(f"invalid JSON: {exc}", "") from exc
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
        raw = {"type": raw.get("type"), **raw["data"]}
    try:
        return WsCommand.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CommandError(err["msg"], ".".join(str(p) for p in err["loc"])) from exc
