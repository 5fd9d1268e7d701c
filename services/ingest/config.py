"""Settings of the ingest service (env prefix ``VERTAC_INGEST_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_INGEST_", extra="ignore")

    durable: str = Field(default="ingest", description="Durable consumer of the samples stream.")
    batch: int = Field(default=512, ge=1, le=10_000, description="Frames fetched per batch.")
    linger_s: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description="After a short batch, wait this long for more before writing it: a plant's "
        "frames go to PostgreSQL in a few large transactions, each second's rollup of a sensor "
        "written about once instead of once per frame.",
    )
    writers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Batches written to PostgreSQL at once (the writes are idempotent, so "
        "their order does not matter). Each writer fetches its next batch while it writes one; "
        "more than one makes smaller transactions, for a database with cores to spare.",
    )
    zstd_level: int = Field(
        default=3, ge=1, le=19, description="Compression level of stored frames."
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9101, ge=0, description="/metrics port; 0 disables it.")
    influx_url: str = Field(default="", description="InfluxDB URL; empty disables the sink.")
    influx_token: str = ""
    influx_org: str = "vertac"
    influx_bucket: str = "vertac"
    influx_batch: int = Field(default=16, ge=1, description="Frames per InfluxDB write.")
    influx_max_deliver: int = Field(
        default=200,
        ge=1,
        description="Deliveries (its process died while writing it) before a frame's InfluxDB "
        "write is dead-lettered; an unreachable InfluxDB is retried for as long as it lasts.",
    )
    influx_retry_delay_s: float = Field(default=3.0, gt=0)
    rollups: bool = Field(default=True, description="Write 1 s and 1 min rollups with the frames.")
    digest: bool = Field(
        default=True,
        description="At a site of a central VerTac: publish each frame's digest (each sensor's "
        "extremes) for a central that takes digests; off saves that work where central takes "
        "the samples whole or none.",
    )
    retention_check_s: float = Field(
        default=600,
        gt=0,
        description="How often raw partitions are created ahead and expired ones dropped.",
    )
