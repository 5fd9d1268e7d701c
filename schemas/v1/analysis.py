"""Version 1 contracts: Post-cycle analysis results."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas.v1.base import Contract, StreamId


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
    health_score: float | None = Field(
        ge=0,
        le=100,
        description="0-100; null when the cycle was not comparable (see ``comparable``): a "
        "cycle that compared too little of its reference gets no score.",
    )
    risk_class: str = Field(
        description="low, medium, high or critical; unknown when the cycle was not comparable."
    )
    comparable: bool = Field(
        default=True,
        description="False when the cycle had no data or compared fewer than half of its "
        "reference's sensors; ``qualification`` says why.",
    )
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
