"""Version 1 contracts: REST reads (status, health, errors, overlays, alerts, datasets)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.v1.base import Contract, CycleId, StreamId
from schemas.v1.registry import SensorSpec


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


class SiteLinkStatus(Contract):
    """One site of a central VerTac, in the answer of ``GET /api/sites``: how far central has
    taken what the site keeps."""

    site: str
    state: Literal["linked", "catching_up", "cut_off", "not_linked"] = Field(
        description="linked: central has all the site keeps (lag 0) and heard from it within "
        "the last 5 s; catching_up: it hears from the site and takes what it missed; cut_off: "
        "it has not heard from the site for 5 s or more, or the site's source reports an "
        "error; not_linked: central has no stream of the site (vertac central --site)."
    )
    lag: int | None = Field(
        default=None,
        description="Messages the site keeps that central has not taken yet, as of the last "
        "contact (summed over the site's streams); null: never in contact.",
    )
    last_contact_s: float | None = Field(
        default=None,
        description="Seconds since central last heard from the site's streams (the longest "
        "of them); null: never.",
    )
    messages: int = Field(default=0, description="Messages central keeps of the site.")
    error: str | None = Field(default=None, description="What a source of the site reports.")


class HealthStatus(Contract):
    """Answer of ``GET /api/health``."""

    status: Literal["ok", "degraded"]
    bus: str
    database: str
    version: str = Field(default="", description="Told to a signed-in caller only.")
    pid: int = Field(
        default=0,
        description="Process that answered (each gateway replica has one); signed-in callers only.",
    )


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

    cycle_id: CycleId
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


class HistoryTrace(Contract):
    """One sensor's buckets: the time (ms) each bucket starts, min, max, mean, sample count.
    Samples of a quality that is not good (below 192: bad or uncertain) and NaN are no values:
    counted in ``count`` and ``bad``, left out of min, max and mean."""

    t_ms: list[float]
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]
    count: list[int]
    bad: list[int] = Field(
        default_factory=list,
        description="Samples per bucket whose quality is not good (not in min, max, mean).",
    )


class HistorySamples(Contract):
    """Answer of ``GET /api/live/stream/{id}/samples``: any time range, at most ``max_points``
    buckets per sensor, from raw frames or the 1 s / 1 min rollups (``resolution``)."""

    stream_id: StreamId
    start: datetime
    end: datetime
    resolution: Literal["raw", "1s", "1m"]
    bucket_ms: float = Field(description="Width of one bucket.")
    sensors: dict[str, HistoryTrace]
