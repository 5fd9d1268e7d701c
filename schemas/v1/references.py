"""Version 1 contracts: Reference (golden cycle) requests and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.v1.base import DATASET_PATTERN, Contract, CycleId, StreamId


class ReferenceSource(Contract):
    """What a new reference is made of: ``cycle_ids`` of the stream, or a ``dataset``
    (optionally only its cycles of one ``label``)."""

    cycle_ids: list[CycleId] = Field(
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
    def _one_source(self) -> ReferenceSource:
        _one_source_of(self.cycle_ids, self.dataset)
        return self


class CreateReference(ReferenceSource):
    """Request on ``vertac.references.<stream_id>.create`` (REST ``POST .../references``)."""

    version: Literal[1] = 1
    stream_id: StreamId


class ActivateReference(Contract):
    """Request on ``vertac.references.<stream_id>.activate``."""

    version: Literal[1] = 1
    stream_id: StreamId
    reference_version: int = Field(ge=1, le=2**31 - 1)


class DryRunReference(Contract):
    """Request on ``vertac.references.<stream_id>.dry_run``: evaluate a candidate reference (made
    from ``cycle_ids``, or an existing ``reference_version``) against the last ``last_n`` cycles."""

    version: Literal[1] = 1
    stream_id: StreamId
    cycle_ids: list[CycleId] = Field(default_factory=list, max_length=200)
    reference_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
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
    reference_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class NewReferenceBody(ReferenceSource):
    """Body of ``POST /api/live/stream/{id}/references``: ``cycle_ids`` of the stream, or a
    ``dataset`` (optionally only its cycles of one ``label``)."""


def _one_source_of(cycle_ids: list[CycleId], dataset: str | None) -> None:
    if bool(cycle_ids) == bool(dataset):
        raise ValueError("give either cycle_ids or dataset")


class DryRunBody(Contract):
    """Body of ``POST /api/live/stream/{id}/references/dry-run``."""

    cycle_ids: list[CycleId] = Field(default_factory=list, max_length=200)
    reference_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
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
    health_score: float | None = Field(description="null: the cycle was not comparable.")
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
