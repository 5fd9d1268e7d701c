"""Settings of the analysis service (env prefix ``VERTAC_ANALYSIS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_ANALYSIS_", extra="ignore")

    durable: str = Field(default="analysis", description="Durable consumer of cycle events.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9103, ge=0, description="/metrics port; 0 disables it.")
    n_points: int = Field(
        default=2000,
        ge=16,
        le=100_000,
        description="Most points a sensor is compared on; each sensor gets as many as it has "
        "samples in a cycle, up to this.",
    )
    band_share: float = Field(default=0.05, gt=0, le=1, description="Sakoe-Chiba band, share.")
    envelope_k: float = Field(default=3.0, gt=0, description="Envelope half-width, spreads.")
    drift_share_slow: float = Field(
        default=0.03, ge=0, description="Level drift slow sensors may show, share of level."
    )
    workers: int = Field(default=2, ge=1, description="Sensors compared in parallel.")
    auto_reference_cycles: int = Field(
        default=3,
        ge=0,
        description="With no reference yet, build one from the first N completed cycles; 0: never.",
    )
    model_cycles: int = Field(
        default=50,
        ge=0,
        description="The learned model of normal cycles learns from the last N healthy cycles "
        "(its reference's always among them); 0: no learned model.",
    )
    model_feeds_from: int = Field(
        default=8,
        ge=5,
        description="The learned model feeds the health score once it learnt from this many.",
    )
    trend_window: int = Field(
        default=30, ge=3, description="The health trend is fitted over the last N scored cycles."
    )
    trend_threshold: float = Field(
        default=40.0, ge=0, le=100, description="The score the trend's forecast counts down to."
    )
    trend_horizon_cycles: float = Field(
        default=20.0,
        gt=0,
        description="A trend alert is raised when the threshold may be reached within N cycles.",
    )
