"""Settings of the cycles service (env prefix ``VERTAC_CYCLES_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_CYCLES_", extra="ignore")

    durable: str = Field(
        default="cycles",
        description="Prefix of the durable consumers, one per partition (cycles-p00 ...).",
    )
    ack_wait_s: float = Field(
        default=6.0,
        gt=0,
        description="JetStream ack wait of the cycle consumers: how long a replica that died "
        "holds up the frames it had in flight before another replica takes them.",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9102, ge=0, description="/metrics port; 0 disables it.")
    batch: int = Field(default=256, ge=1, description="Frames fetched per batch.")
    tick_s: float = Field(default=0.5, gt=0, description="How often timeouts are checked.")
    fetch_pause_s: float = Field(
        default=0.0,
        ge=0,
        description="Once a partition's frames are all handled, wait this long before asking "
        "for more, so they come several at a time (a fetch costs as much for one as for many). "
        "Off by default: on a lightly loaded host it lengthened latencies (docs/benchmarks.md).",
    )
    save_every_s: float = Field(
        default=1.0,
        gt=0,
        description="How often at most a stream's cycle state is written to KV between two "
        "cycle starts or ends (each of those is written at once); its frames are "
        "acknowledged when it is written. Keep it well under ack_wait_s.",
    )
