"""Pydantic v2 models of every bus message and REST body.

Each model carries ``version``; within a version fields are only ever added, with defaults. A
breaking change is a new model with the next version. ``make schemas`` exports them as JSON Schema
into ``schemas/json/``, and a test fails when the committed files drift from these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.subjects import STREAM_ID_PATTERN

DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
StreamId = Annotated[
    str,
    Field(
        pattern=STREAM_ID_PATTERN,
        description="Stream id: letters, digits, '_' or '-', at most 64 characters.",
        examples=["press-01"],
    ),
]
SensorId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\s,=]+$",
        description="Sensor id, unique within its stream; no spaces, commas or '='.",
        examples=["pressure_1"],
    ),
]

Int64 = Annotated[
    int,
    Field(ge=-(2**63), le=2**63 - 1, description="A signed 64-bit integer (ns timestamps, seq)."),
]


class Contract(BaseModel):
    """Base of every contract: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- frames -----------------------------------------------------------------------------------


class SeriesJson(Contract):
    """The samples of one sensor in a JSON frame."""

    sensor_id: SensorId
    values: list[float] = Field(description="Sample values in order.", max_length=10_000_000)
    t0_ns: Int64 | None = Field(
        default=None, description="Timestamp of the first sample, ns since the Unix epoch."
    )
    period_ns: Int64 | None = Field(
        default=None, gt=0, description="Sampling period in ns for uniformly sampled values."
    )
    timestamps_ns: list[Int64] | None = Field(
        default=None, description="Explicit timestamp of every sample, ns since the Unix epoch."
    )
    quality: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, description="OPC DA quality per sample (192 good); omitted means all good."
    )

    @model_validator(mode="after")
    def _timebase(self) -> SeriesJson:
        if self.timestamps_ns is None:
            if self.t0_ns is None or (self.period_ns is None and len(self.values) > 1):
                raise ValueError("give either timestamps_ns or t0_ns with period_ns")
        elif len(self.timestamps_ns) != len(self.values):
            raise ValueError("timestamps_ns and values differ in length")
        if self.quality is not None and len(self.quality) != len(self.values):
            raise ValueError("quality and values differ in length")
        return self


class FrameJson(Contract):
    """A sample frame in its JSON encoding (subject ``vertac.samples.<stream_id>``)."""

    version: Literal[1] = 1
    stream_id: StreamId
    seq: Int64 = Field(ge=0, description="Per-stream monotonic frame number.")
    sent_ns: Int64 = Field(default=0, description="When the publisher sent the frame, ns.")
    sensors: list[SeriesJson] = Field(min_length=1)


class BinarySeriesHeader(Contract):
    """Per-sensor entry of the msgpack header of a binary frame (see ``schemas/frames.py``)."""

    id: SensorId
    dtype: Literal["f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"] = Field(
        description="numpy type code of the little-endian values."
    )
    n: int = Field(ge=0, description="Number of samples.")
    t0: int = Field(description="Timestamp of the first sample, ns since the Unix epoch.")
    dt: int = Field(
        ge=0, description="Sampling period in ns; 0 means n int64 timestamps precede the values."
    )
    q: bool = Field(default=False, description="True when n uint8 qualities follow the values.")


class BinaryFrameHeader(Contract):
    """The msgpack header of a binary frame: ``b"VTF1" | uint32 LE length | header | body``."""

    v: Literal[1] = 1
    stream_id: StreamId
    seq: int = Field(ge=0)
    sent_ns: int = 0
    layout: Literal["plain", "shuffled"] = Field(
        default="plain",
        description="shuffled: timestamps delta-encoded and arrays byte-shuffled (storage form).",
    )
    sensors: list[BinarySeriesHeader] = Field(min_length=1)


# --- registry ---------------------------------------------------------------------------------


class SensorSpec(Contract):
    """One sensor of a registered stream."""

    id: SensorId
    name: str = Field(default="", max_length=200, description="Human-readable name.")
    type: str = Field(
        default="generic", max_length=64, description="pressure, temperature, flow, ..."
    )
    unit: str = Field(default="", max_length=32, description="Engineering unit, e.g. bar.")
    rate_hz: float = Field(default=1.0, gt=0, le=1_000_000, description="Nominal sampling rate.")


class StreamRegistration(Contract):
    """Body of ``POST /api/live/register``: a machine and its sensors."""

    version: Literal[1] = 1
    device_name: str = Field(min_length=1, max_length=200, examples=["Press 1"])
    stream_id: StreamId | None = Field(
        default=None, description="Chosen id; derived from device_name when omitted."
    )
    description: str = Field(default="", max_length=2000)
    dataset_id: str | None = Field(
        default=None,
        pattern=DATASET_PATTERN,
        description="Dataset the stream's cycles are filed under; live-<stream_id> when omitted.",
    )
    sensors: list[SensorSpec] = Field(min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _unique_sensors(self) -> StreamRegistration:
        ids = [s.id for s in self.sensors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sensor ids repeat: {', '.join(dupes)}")
        return self


class StreamRegistered(Contract):
    """Event on ``vertac.registry.<stream_id>``: a stream was registered or updated."""

    version: Literal[1] = 1
    stream_id: StreamId
    device_name: str
    description: str = ""
    sensors: list[SensorSpec]
    registered_at: datetime
    dataset_id: str = Field(default="", description="Dataset of the stream's cycles.")


class RegisterResponse(Contract):
    """Answer of ``POST /api/live/register``."""

    stream_id: StreamId
    dataset_id: str = Field(description="Dataset the stream's cycles are filed under.")
    status: Literal["registered", "updated"]
    warnings: list[str] = Field(default_factory=list, description="What was taken as given.")
    samples_subject: str
    control_subject: str
    websocket: str


# --- REST batch -------------------------------------------------------------------------------


class BatchSample(Contract):
    """One timestamped reading of several sensors."""

    timestamp: datetime | float = Field(
        description="ISO 8601 time, or seconds since the Unix epoch as a number."
    )
    values: dict[str, float] = Field(min_length=1, description="Sensor id to value.")
    quality: dict[str, Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, description="Sensor id to OPC DA quality; missing means good (192)."
    )


class BatchRequest(Contract):
    """Body of ``POST /api/live/batch``."""

    stream_id: StreamId
    samples: list[BatchSample] = Field(min_length=1, max_length=100_000)
    batch_id: str | None = Field(
        default=None,
        max_length=128,
        description="Client's id of this batch; a retried batch with the same id is stored once.",
    )


class BufferStatus(Contract):
    """Where the accepted batch went."""

    stream: str = Field(description="JetStream stream that stored the frame.")
    stream_seq: int = Field(description="Its sequence number in that JetStream stream.")
    duplicate: bool = Field(description="True when JetStream had already stored this batch.")


class BatchAccepted(Contract):
    """Answer of ``POST /api/live/batch``, sent only after JetStream acknowledged the frame."""

    ack_id: str
    buffer_status: Literal["ok"] = Field(
        default="ok", description="v0.2.0's field: ok once JetStream stored the batch."
    )
    samples_received: int
    seq: int
    buffer: BufferStatus = Field(description="Where JetStream stored the batch.")


# --- control and lifecycle --------------------------------------------------------------------


class CycleCommand(Contract):
    """Command on ``vertac.control.<stream_id>``."""

    version: Literal[1] = 1
    stream_id: StreamId
    command: Literal["cycle_start", "cycle_stop", "cycle_abort"]
    issued_at: datetime
    source: str = Field(default="api", description="rest, websocket, cli, ...")
    reason: str = ""


class CommandAccepted(Contract):
    """Answer of ``POST /api/live/cycle/start|stop``."""

    stream_id: StreamId
    command: str
    stream_seq: int


class CycleConfig(Contract):
    """How cycles of one stream start and end (KV ``vertac_cycle_config``, REST
    ``PUT /api/live/stream/{id}/cycle-config``). Manual commands always work as well."""

    version: Literal[1] = 1
    trigger: Literal["manual", "signal"] = Field(
        default="manual",
        description="manual: commands only; signal: a sensor crossing thresholds (a digital "
        "'cycle active' input is start_above 0.5, stop_below 0.5).",
    )
    signal_sensor: str | None = Field(default=None, description="Sensor that drives the trigger.")
    start_above: float | None = Field(
        default=None, description="Start when the value rises to this."
    )
    stop_below: float | None = Field(
        default=None, description="Stop when the value falls to this (hysteresis: <= start_above)."
    )
    debounce_s: float = Field(default=0.0, ge=0, description="A crossing must hold this long.")
    gap_timeout_s: float = Field(default=5.0, gt=0, description="No data this long aborts a cycle.")
    min_duration_s: float = Field(default=0.0, ge=0, description="Shorter cycles end aborted.")
    max_duration_s: float = Field(default=3600.0, gt=0, description="Longer cycles are aborted.")
    stop_grace_s: float = Field(
        default=2.0, ge=0, description="After a stop command, wait this long for in-flight data."
    )

    @model_validator(mode="after")
    def _consistent(self) -> CycleConfig:
        if self.trigger == "signal":
            if not self.signal_sensor or self.start_above is None or self.stop_below is None:
                raise ValueError("a signal trigger needs signal_sensor, start_above and stop_below")
            if self.stop_below > self.start_above:
                raise ValueError("stop_below must not exceed start_above (hysteresis)")
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        return self


class CycleStateRecord(Contract):
    """Cycle state of one stream, kept in KV ``vertac_cycle_state`` under the stream id, so a
    restarted or second ``cycles`` instance continues where the last one stopped."""

    version: Literal[1] = 1
    stream_id: StreamId
    state: Literal["idle", "running", "stopping"] = "idle"
    cycle_no: int = 0
    cycle_id: str | None = None
    started_ns: int | None = None
    start_js_seq: int | None = None
    start_reason: str = ""
    stop_at_ns: int | None = None
    stop_state: Literal["completed", "aborted"] = "completed"
    stop_reason: str = ""
    stop_requested_ns: int | None = Field(default=None, description="Wall clock of the stop.")
    last_js_seq: int = Field(default=0, description="Last samples message applied (idempotency).")
    last_seq: int = -1
    last_data_ns: int | None = None
    last_arrival_ns: int | None = None
    candidate_since_ns: int | None = Field(default=None, description="Debounce of the trigger.")
    armed: bool = Field(
        default=False,
        description="The trigger signal was low since the last cycle, so a rise starts one.",
    )
    recent: list[tuple[int, int]] = Field(
        default_factory=list,
        description="(JetStream sequence, first sample ns) of the last frames, so a cycle started "
        "by a command also records frames applied just before the command arrived.",
    )
    frames: int = 0
    gaps: int = 0
    late_frames: int = 0
    replayed_frames: int = 0


class CycleStateChanged(Contract):
    """Event on ``vertac.cycles.<stream_id>.<event>``: a cycle started, completed or aborted."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_id: str
    state: Literal["running", "completed", "aborted"]
    at: datetime
    reason: str = Field(default="", description="Why it ended (or what started it).")
    cycle_no: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    samples: dict[str, int] = Field(default_factory=dict, description="Samples per sensor.")
    frames: int = 0
    gaps: int = Field(default=0, description="Frames missing from the seq sequence.")
    late_frames: int = Field(default=0, description="Frames that arrived out of order.")
    replayed_frames: int = Field(default=0, description="Frames seen twice with the same seq.")
    completeness: float = Field(default=1.0, ge=0, le=1)
    recording: str | None = Field(
        default=None, description="Object name of the recorded samples in 'vertac_cycles'."
    )


class SensorStats(Contract):
    """Statistics of one sensor over a cycle."""

    min: float
    max: float
    mean: float
    std: float
    rms: float


class SensorDeviation(Contract):
    """How one sensor of a cycle differs from the reference."""

    sensor_id: str
    sensor_type: str = "generic"
    unit: str = ""
    euclidean: float = Field(description="Euclidean distance on the common time base.")
    dtw: float = Field(description="DTW distance (Sakoe-Chiba band), same as tslearn's.")
    max_deviation: float = Field(description="Largest |cycle - reference|, in the sensor's unit.")
    max_deviation_at_s: float = Field(description="Where in the cycle it occurs, seconds.")
    mean_deviation: float
    outside_envelope_share: float = Field(ge=0, le=1)
    offset: float = Field(description="Mean level difference, in the sensor's unit.")
    offset_z: float = Field(description="Offset in units of its tolerance (drift-aware).")
    shape_z: float = Field(
        description="RMS of the level-free difference in units of normal spread."
    )
    severity: float = Field(description="Combined deviation; about 1 for a normal cycle.")
    timing_share: float = Field(ge=0, le=1, description="Share of the difference that is timing.")
    magnitude_share: float = Field(ge=0, le=1, description="Share that is magnitude.")
    max_lag_s: float = Field(description="Largest time shift along the warping path, seconds.")
    pattern: Literal["normal", "offset", "drift", "spike", "lag", "noise", "shape"]
    contribution: float = Field(ge=0, le=100, description="Share of the cycle's deviation, %.")
    cycle_stats: SensorStats
    reference_stats: SensorStats


class FirstDeviation(Contract):
    """The sensor that left its envelope first."""

    sensor_id: str
    at_s: float = Field(description="Seconds after cycle start.")
    z: float = Field(description="Deviation there, in units of the envelope half-width.")


class Recommendation(Contract):
    """A readable rule's advice, with the evidence that triggered it."""

    sensor_id: str
    pattern: str
    text: str
    evidence: str


class AnalysisCompleted(Contract):
    """Event on ``vertac.analysis.<stream_id>``: a finished cycle compared with its reference."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_id: str
    reference_version: int | None = None
    health_score: float = Field(ge=0, le=100)
    risk_class: str
    aborted: bool = False
    end_reason: str = ""
    qualified: bool = Field(default=False, description="True when data was incomplete.")
    qualification: str = ""
    duration_s: float = 0.0
    reference_duration_s: float = 0.0
    timing_share: float = Field(default=0.0, ge=0, le=1)
    sensors: list[SensorDeviation] = Field(default_factory=list, description="Ranked, worst first.")
    first_deviation: FirstDeviation | None = None
    recommendations: list[Recommendation] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class CycleSummary(Contract):
    """A cycle as listed by ``GET /api/live/stream/{id}/cycles``."""

    cycle_id: str
    stream_id: StreamId
    cycle_no: int
    state: str
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    end_reason: str
    samples: dict[str, int]
    frames: int
    gaps: int
    completeness: float
    health_score: float | None = None
    risk_class: str | None = None
    reference_version: int | None = None


class CycleDetail(Contract):
    """Answer of ``GET /api/live/cycles/{cycle_id}``: the cycle and its latest analysis."""

    cycle: CycleSummary
    analysis: AnalysisCompleted | None = None


class CreateReference(Contract):
    """Request on ``vertac.references.<stream_id>.create`` (REST ``POST .../references``)."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_ids: list[str] = Field(
        default_factory=list, max_length=200, description="Good cycles of this stream to average."
    )
    dataset: str | None = Field(
        default=None,
        pattern=DATASET_PATTERN,
        description="Or: the cycles of this dataset (of any stream, e.g. imported batch cycles).",
    )
    label: str | None = Field(
        default=None, max_length=64, description="With dataset: only its cycles of this label."
    )
    activate: bool = Field(default=False, description="Make it the stream's active reference.")
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_source(self) -> CreateReference:
        _one_source_of(self.cycle_ids, self.dataset)
        return self


class ActivateReference(Contract):
    """Request on ``vertac.references.<stream_id>.activate``."""

    version: Literal[1] = 1
    stream_id: StreamId
    reference_version: int = Field(ge=1)


class DryRunReference(Contract):
    """Request on ``vertac.references.<stream_id>.dry_run``: evaluate a candidate reference (made
    from ``cycle_ids``, or an existing ``reference_version``) against the last ``last_n`` cycles."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_ids: list[str] = Field(default_factory=list, max_length=200)
    reference_version: int | None = Field(default=None, ge=1)
    last_n: int = Field(default=20, ge=1, le=500)
    alert_below: float = Field(
        default=60.0, ge=0, le=100, description="Score that raises an alert."
    )

    @model_validator(mode="after")
    def _one_candidate(self) -> DryRunReference:
        if bool(self.cycle_ids) == (self.reference_version is not None):
            raise ValueError("give either cycle_ids or reference_version")
        return self


class ListReferences(Contract):
    """Request on ``vertac.references.<stream_id>.list`` / ``.get`` (with ``reference_version``)."""

    version: Literal[1] = 1
    stream_id: StreamId
    reference_version: int | None = None


class NewReferenceBody(Contract):
    """Body of ``POST /api/live/stream/{id}/references``: ``cycle_ids`` of the stream, or a
    ``dataset`` (optionally only its cycles of one ``label``)."""

    cycle_ids: list[str] = Field(
        default_factory=list, max_length=200, description="Good cycles of this stream to average."
    )
    dataset: str | None = Field(
        default=None,
        pattern=DATASET_PATTERN,
        description="Or: the cycles of this dataset (of any stream, e.g. imported batch cycles).",
    )
    label: str | None = Field(default=None, max_length=64)
    activate: bool = False
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_source(self) -> NewReferenceBody:
        _one_source_of(self.cycle_ids, self.dataset)
        return self


def _one_source_of(cycle_ids: list[str], dataset: str | None) -> None:
    if bool(cycle_ids) == bool(dataset):
        raise ValueError("give either cycle_ids or dataset")


class DryRunBody(Contract):
    """Body of ``POST /api/live/stream/{id}/references/dry-run``."""

    cycle_ids: list[str] = Field(default_factory=list, max_length=200)
    reference_version: int | None = Field(default=None, ge=1)
    last_n: int = Field(default=20, ge=1, le=500)
    alert_below: float = Field(default=60.0, ge=0, le=100)


class ReferenceSensor(Contract):
    """One sensor of a reference: mean shape and envelope on the common base."""

    sensor_id: str
    sensor_type: str
    unit: str
    mean: list[float]
    lower: list[float]
    upper: list[float]


class ReferenceInfo(Contract):
    """A stored reference."""

    stream_id: StreamId
    reference_version: int
    active: bool
    source_cycles: list[str]
    n_points: int
    duration_s: float
    description: str
    created_at: datetime
    sensors: list[str]
    curves: list[ReferenceSensor] | None = Field(
        default=None, description="Mean and envelope per sensor (when inspecting one reference)."
    )


class DryRunCycle(Contract):
    cycle_id: str
    health_score: float
    risk_class: str
    top_sensor: str | None


class DryRunResult(Contract):
    """What a candidate reference would have said about recent cycles."""

    stream_id: StreamId
    candidate: str
    cycles: list[DryRunCycle]
    mean_score: float | None
    alerts: int = Field(description="Cycles that would have scored below alert_below.")


RuleKind = Literal[
    "limit", "rate", "flatline", "data_gap", "envelope", "health", "contribution", "abnormal_stop"
]


class AlertRule(Contract):
    """A live alert rule of one stream (KV ``vertac_alert_rules``, REST ``/api/live/stream/{id}/
    alert-rules``). Which fields matter depends on ``kind``; the validator names a missing one."""

    version: Literal[1] = 1
    rule_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Unique within the stream.")
    stream_id: StreamId
    kind: RuleKind
    sensor_id: str | None = Field(
        default=None, description="The sensor (limit, rate, flatline; contribution: optional)."
    )
    severity: Literal["warning", "critical"] = "warning"
    hi: float | None = Field(default=None, description="limit: warning above this.")
    hihi: float | None = Field(default=None, description="limit: critical above this.")
    lo: float | None = Field(default=None, description="limit: warning below this.")
    lolo: float | None = Field(default=None, description="limit: critical below this.")
    max_rate: float | None = Field(default=None, gt=0, description="rate: units per second.")
    flat_s: float | None = Field(default=None, gt=0, description="flatline: unchanged this long.")
    flat_band: float = Field(
        default=0.0, ge=0, description="flatline: changes below this count as none."
    )
    gap_s: float | None = Field(default=None, gt=0, description="data_gap: no frames this long.")
    envelope_k: float = Field(
        default=3.0, gt=0, description="envelope: half-width in normal spreads of the reference."
    )
    health_below: float | None = Field(default=None, ge=0, le=100)
    contribution_above: float | None = Field(default=None, ge=0, le=100)
    delay_on_ms: int = Field(default=0, ge=0, description="The condition must hold this long.")
    deadband: float = Field(default=0.0, ge=0, description="Hysteresis before the alert clears.")
    enabled: bool = True
    description: str = Field(default="", max_length=500)
    notify: list[Literal["webhook", "email"]] | None = Field(
        default=None,
        description="Channels for this rule's alerts; unset: every channel, by severity.",
    )

    @model_validator(mode="after")
    def _fields_for_kind(self) -> AlertRule:
        needs: dict[str, tuple[str, ...]] = {
            "limit": ("sensor_id",),
            "rate": ("sensor_id", "max_rate"),
            "flatline": ("sensor_id", "flat_s"),
            "envelope": ("sensor_id",),
            "data_gap": ("gap_s",),
            "health": ("health_below",),
            "contribution": ("contribution_above",),
            "abnormal_stop": (),
        }
        missing = [f for f in needs[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        if self.kind == "limit":
            levels = [self.hi, self.hihi, self.lo, self.lolo]
            if all(v is None for v in levels):
                raise ValueError("a limit rule needs at least one of hi, hihi, lo, lolo")
            if self.hi is not None and self.hihi is not None and self.hihi < self.hi:
                raise ValueError("hihi must not be below hi")
            if self.lo is not None and self.lolo is not None and self.lolo > self.lo:
                raise ValueError("lolo must not be above lo")
        return self


class AlertChanged(Contract):
    """Event on ``vertac.alerts.<stream_id>.<severity>``: an alert was raised (again),
    acknowledged or cleared."""

    version: Literal[1] = 1
    alert_id: str
    stream_id: StreamId
    rule_id: str
    kind: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["raised", "acknowledged", "cleared"]
    message: str
    at: datetime
    sensor_id: str | None = None
    value: float | None = None
    occurrences: int = Field(default=1, description="How often the condition came back.")
    raised_at: datetime | None = None
    acknowledged_by: str | None = None
    comment: str = ""


class AcknowledgeAlert(Contract):
    """Body of ``POST /api/live/alerts/{alert_id}/ack``."""

    user: str = Field(min_length=1, max_length=100)
    comment: str = Field(default="", max_length=2000)


class DeadLetter(Contract):
    """A message a service could not process, on ``vertac.dlq.<service>``."""

    version: Literal[1] = 1
    service: str
    subject: str
    reason: str
    field: str = Field(default="", description="The offending field, when one is known.")
    error_type: str = Field(
        default="", description="Type of the failure (FrameError, ValueError, MaxDeliveries, ...)."
    )
    deliveries: int = 1
    stream: str = Field(default="", description="The JetStream stream the message came from.")
    stream_seq: int | None = Field(default=None, description="Sequence in the source stream.")
    headers: dict[str, str] = Field(default_factory=dict)
    payload_bytes: int = Field(default=0, description="Size of the original payload.")
    payload_inline: bool = Field(
        default=True,
        description="False when the payload was too large to copy: read it from `stream` at "
        "`stream_seq` (while the stream's retention keeps it).",
    )
    payload_b64: str = Field(
        default="", description="The original payload, base64 (empty when not inline)."
    )
    at: datetime


# --- REST reads -------------------------------------------------------------------------------


class StreamStatus(Contract):
    """Answer of ``GET /api/live/stream/{id}/status``."""

    stream_id: StreamId
    registered: bool
    device_name: str | None = None
    sensors: list[SensorSpec] = Field(default_factory=list)
    cycle_state: str = "idle"
    frames_persisted: int = 0
    samples_persisted: int = 0
    last_seq: int | None = None
    last_sample_at: datetime | None = None


class HealthStatus(Contract):
    """Answer of ``GET /api/health``."""

    status: Literal["ok", "degraded"]
    bus: str
    database: str
    version: str


class ErrorDetail(Contract):
    """One problem with a request."""

    field: str
    message: str


class ErrorBody(Contract):
    """Body of every 4xx/5xx answer of the REST API."""

    error: str
    details: list[ErrorDetail] = Field(default_factory=list)


class OverlaySensor(Contract):
    """One sensor of a cycle over its reference, on the cycle's own time axis (seconds)."""

    sensor_id: str
    unit: str = ""
    t_s: list[float] = Field(description="Time since cycle start of each cycle point.")
    value: list[float] = Field(description="Cycle values (bucket means when thinned).")
    ref_t_s: list[float] = Field(
        default_factory=list,
        description="Time of the reference points: the cycle's own points (``t_s``); the "
        "reference is stretched over the cycle's duration and interpolated there.",
    )
    ref_mean: list[float] = Field(default_factory=list)
    ref_lower: list[float] = Field(default_factory=list)
    ref_upper: list[float] = Field(default_factory=list)


class CycleOverlay(Contract):
    """Answer of ``GET /api/live/cycles/{id}/overlay``: what the report's charts draw."""

    cycle_id: str
    reference_version: int | None = None
    sensors: list[OverlaySensor]


class AlertGroup(Contract):
    """Alerts of one rule (and sensor) and severity, counted together."""

    severity: Literal["info", "warning", "critical"]
    rule: str
    kind: str
    sensor_id: str | None = None
    alerts: int = Field(description="Distinct alerts in the group.")
    occurrences: int = Field(description="How often their conditions came back, summed.")
    first_raised_at: datetime
    last_message: str


class CycleAlerts(Contract):
    """Answer of ``GET /api/live/cycles/{id}/alerts``: alerts active while the cycle ran, grouped
    by severity (critical first), then rule and sensor."""

    cycle_id: str
    groups: list[AlertGroup]


class DatasetEntryBody(Contract):
    """Body of ``POST /api/live/datasets/{name}/cycles``: file a cycle into a dataset."""

    cycle_id: str = Field(min_length=1, max_length=200)
    label: str = Field(
        default="", max_length=200, description="e.g. good, valve-fault, after-maintenance."
    )
    note: str = Field(default="", max_length=2000)


class DatasetEntry(Contract):
    """A cycle in a dataset."""

    dataset: str
    cycle_id: str
    stream_id: StreamId
    label: str
    note: str
    added_at: datetime
    health_score: float | None = None


class DatasetImportedCycle(Contract):
    """One cycle an import stored."""

    cycle_id: str
    key: str = Field(description="Where it came from: the file name, or its cycle column value.")
    label: str
    samples: int
    duration_s: float


class DatasetImported(Contract):
    """Answer of ``POST /api/live/datasets/{name}/import``."""

    dataset: str
    stream_id: StreamId
    cycles: list[DatasetImportedCycle]


class DatasetInfo(Contract):
    """A dataset as listed by ``GET /api/live/datasets``."""

    dataset: str
    cycles: int
    streams: list[str]
    labels: dict[str, int]
    updated_at: datetime


# --- WebSocket --------------------------------------------------------------------------------


class WsSensorTrace(Contract):
    """Decimated samples of one sensor: per bucket the time (ms), min, max and last value."""

    t_ms: list[float]
    min: list[float]
    max: list[float]
    last: float
    count: int = Field(description="Raw samples the buckets summarise.")
    mean: list[float] = Field(default_factory=list, description="Mean per bucket.")


class WsSamples(Contract):
    """Server → browser: decimated samples since the previous message."""

    type: Literal["samples"] = "samples"
    stream_id: StreamId
    seq: int = Field(description="Highest frame seq included.")
    sensors: dict[str, WsSensorTrace]
    sent_ms: list[float] = Field(
        default_factory=list,
        description="Publication time (Unix ms) of each frame included, for latency figures.",
    )


class WsStateChange(Contract):
    """Server → browser: a cycle lifecycle event."""

    type: Literal["state_change"] = "state_change"
    stream_id: StreamId
    event: CycleStateChanged


class WsAnalysisResult(Contract):
    """Server → browser: a post-cycle analysis."""

    type: Literal["analysis_result"] = "analysis_result"
    stream_id: StreamId
    result: AnalysisCompleted


class WsAlert(Contract):
    """Server → browser: an alert was raised, acknowledged or cleared."""

    type: Literal["alert"] = "alert"
    stream_id: StreamId
    alert: AlertChanged


class WsReady(Contract):
    """Server → browser, first on every connection: the gateway now forwards this stream's
    events, so state read over REST from here on misses nothing."""

    type: Literal["ready"] = "ready"
    stream_id: StreamId


class WsPong(Contract):
    """Server → browser: answer to ``ping``."""

    type: Literal["pong"] = "pong"
    ts: float


class WsError(Contract):
    """Server → browser: a command could not be carried out."""

    type: Literal["error"] = "error"
    error: str
    field: str = ""


class WsCommandAck(Contract):
    """Server → browser: a command was published to the bus."""

    type: Literal["command_ack"] = "command_ack"
    command: str
    stream_seq: int


class WsEnvelope(Contract):
    """Server → browser: every WebSocket message, in VerTac v0.2.0's envelope. ``data`` holds the
    fields of the message of that ``type`` (``WsSamples``, ``WsStateChange``,
    ``WsAnalysisResult``, ``WsAlert``, ``WsReady``, ``WsPong``, ``WsError``, ``WsCommandAck``)
    without its ``type``."""

    type: Literal[
        "samples", "state_change", "analysis_result", "alert", "ready", "pong", "error",
        "command_ack",
    ]  # fmt: skip
    timestamp: datetime = Field(description="When the gateway sent it (ISO 8601, UTC).")
    data: dict[str, Any]


class WsCommand(Contract):
    """Browser → server: ``ping``, ``cycle_start`` or ``cycle_stop``, as JSON
    (``{"type": "cycle_start", "reason": "..."}``), or as plain text as v0.2.0 clients send."""

    type: Literal["ping", "cycle_start", "cycle_stop"]
    reason: str = ""


EXPORTED: tuple[type[BaseModel], ...] = (
    FrameJson,
    BinaryFrameHeader,
    StreamRegistration,
    StreamRegistered,
    RegisterResponse,
    BatchRequest,
    BatchAccepted,
    CycleCommand,
    CommandAccepted,
    CycleConfig,
    CycleStateRecord,
    CycleStateChanged,
    AnalysisCompleted,
    AlertRule,
    AlertChanged,
    AcknowledgeAlert,
    DeadLetter,
    CycleSummary,
    CycleDetail,
    CycleOverlay,
    CycleAlerts,
    DatasetEntryBody,
    DatasetEntry,
    DatasetInfo,
    CreateReference,
    ActivateReference,
    DryRunReference,
    ListReferences,
    ReferenceInfo,
    DryRunResult,
    StreamStatus,
    HealthStatus,
    ErrorBody,
    WsSamples,
    WsStateChange,
    WsAnalysisResult,
    WsAlert,
    WsReady,
    WsPong,
    WsError,
    WsCommandAck,
    WsCommand,
    WsEnvelope,
    DatasetImported,
)
