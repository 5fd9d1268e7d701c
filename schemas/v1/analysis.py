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


class ModelContribution(Contract):
    """One sensor's part in the multivariate statistics of a cycle."""

    sensor_id: str
    spe_share: float = Field(description="Share of the cycle's SPE from this sensor (0-1).")
    t2_share: float = Field(
        description="Share of the cycle's T² from this sensor (may be negative: a sensor can "
        "pull the cycle towards the model's centre)."
    )
    points: list[float] = Field(
        default_factory=list,
        description="Per point of the cycle (at most 60, spread evenly over it): SPE + T² "
        "contribution.",
    )


class ModelLevel(Contract):
    """The learned model's operating-point part: the sensors' mean levels over the cycle against
    the one direction a healthy operating point moves along (a warm-up)."""

    components: int = 0
    t2: float
    t2_limit_95: float
    t2_limit_99: float
    spe: float = Field(description="Distance from the healthy operating line: a level that "
                       "breaks the relation between the sensors.")  # fmt: skip
    spe_limit_95: float
    spe_limit_99: float


class ModelStats(Contract):
    """The cycle judged by the learned model of normal cycles (multiway PCA): Hotelling's T²
    and SPE of the cycle's profile, and of its operating point, with their control limits."""

    available: bool = Field(
        description="False while the model has fewer cycles than it needs; ``note`` says why."
    )
    note: str = ""
    feeds_score: bool = Field(
        default=False,
        description="Whether the model fed this cycle's health score (it does once it learnt "
        "from model_feeds_from cycles).",
    )
    reference_version: int | None = None
    model_version: int = Field(
        default=0, description="How many cycles the model was fitted on (it grows with them)."
    )
    components: int = Field(default=0, description="The profile part's components.")
    t2: float | None = None
    t2_limit_95: float | None = None
    t2_limit_99: float | None = None
    spe: float | None = None
    spe_limit_95: float | None = None
    spe_limit_99: float | None = None
    ratio_99: float | None = Field(
        default=None,
        description="The largest of T²/limit and SPE/limit at 99 %, of the profile and of the "
        "operating point: 1 at the control limit.",
    )
    level: ModelLevel | None = Field(
        default=None, description="The operating point's statistics (t2 and spe above are the "
        "profile's).",
    )  # fmt: skip
    contributions: list[ModelContribution] = Field(
        default_factory=list, description="Largest SPE share first."
    )


class Trend(Contract):
    """A robust (Theil-Sen) trend of the health score over the stream's last cycles, and when
    it would reach the threshold."""

    cycles: int = Field(description="Scored cycles the trend is fitted on.")
    slope_per_cycle: float = Field(description="Health points per cycle (negative: degrading).")
    slope_low: float = Field(description="Lower end of the slope's 90 % interval.")
    slope_high: float = Field(description="Upper end of the slope's 90 % interval.")
    threshold: float = Field(description="The health score the forecast counts down to.")
    cycles_to_threshold: float | None = Field(
        default=None, description="Expected cycles until the threshold; null when not degrading."
    )
    cycles_to_threshold_low: float | None = Field(
        default=None, description="Earliest, from the steeper end of the slope's interval."
    )
    cycles_to_threshold_high: float | None = Field(
        default=None, description="Latest; null when the interval includes no decline."
    )
    seconds_to_threshold: float | None = Field(
        default=None, description="The expected cycles times the median time between cycles."
    )
    degrading: bool = Field(
        default=False, description="True when the whole slope interval lies below zero."
    )
    alert: bool = Field(
        default=False,
        description="True when degrading and the earliest forecast is within the horizon "
        "(the built-in ``_trend`` alert rule fires on it).",
    )
    sensors: dict[str, float] = Field(
        default_factory=dict,
        description="Per sensor, the Theil-Sen slope of its severity per cycle (rising: worse).",
    )


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
    model: ModelStats | None = Field(
        default=None, description="The learned model's T² and SPE (null: not judged by it)."
    )
    trend: Trend | None = Field(
        default=None, description="The stream's health trend up to and including this cycle."
    )
    details: dict[str, Any] = Field(default_factory=dict)
