"""Settings of the alerts service (env prefix ``VERTAC_ALERTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_ALERTS_", extra="ignore")

    durable: str = Field(default="alerts", description="Name of the durable consumers.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9104, ge=0, description="/metrics port; 0 disables it.")
    batch: int = Field(default=256, ge=1, description="Frames fetched per batch.")
    tick_s: float = Field(default=0.5, gt=0, description="How often data gaps are checked.")
    rules_refresh_s: float = Field(default=2.0, gt=0, description="How often rules are re-read.")
    reraise_window_s: float = Field(
        default=60.0, ge=0, description="A condition back within this re-raises the same alert."
    )
