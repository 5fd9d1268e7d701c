"""Settings of the alerts service (env prefix ``VERTAC_ALERTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_ALERTS_", extra="ignore")

    durable: str = Field(
        default="alerts",
        description="Prefix of the durable consumers (samples: alerts-p00 ... one per partition).",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9104, ge=0, description="/metrics port; 0 disables it.")
    batch: int = Field(default=256, ge=1, description="Frames fetched per batch.")
    ack_wait_s: float = Field(
        default=6.0,
        gt=0,
        description="JetStream ack wait of the frame consumers: how long a replica that died "
        "holds up the frames it had in flight before another replica takes them (in order).",
    )
    fetch_pause_s: float = Field(
        default=0.0,
        ge=0,
        description="Once a partition's frames are all handled, wait this long before asking "
        "for more, so they come several at a time. Off by default: on a lightly loaded host it "
        "lengthened latencies (see docs/benchmarks.md).",
    )
    tick_s: float = Field(default=0.5, gt=0, description="How often data gaps are checked.")
    rules_refresh_s: float = Field(default=2.0, gt=0, description="How often rules are re-read.")
    reraise_window_s: float = Field(
        default=60.0, ge=0, description="A condition back within this re-raises the same alert."
    )
    max_new_per_minute: int = Field(
        default=20,
        ge=1,
        description="New alerts per stream and minute; beyond, one summary alert counts the rest.",
    )
    notify_min_severity: str = Field(
        default="warning",
        pattern="^(info|warning|critical)$",
        description="Alerts of this severity or worse are notified (rules may name channels).",
    )
    notify_max_per_minute: int = Field(
        default=10, ge=1, description="Messages per channel and minute; more wait for a digest."
    )
    notify_digest_window_s: float = Field(
        default=2.0, ge=0, description="Events within this of each other go out as one digest."
    )
    notify_retry_delay_s: float = Field(
        default=10.0, gt=0, description="Wait before a failed or over-budget notification retries."
    )
    notify_max_deliver: int = Field(
        default=100,
        ge=1,
        description="Deliveries (its process died while sending it) before a "
        "notification is dead-lettered; a failing channel is retried for as long as it fails.",
    )
    webhook_url: str = Field(default="", description="POST alert events here; empty: no webhook.")
    webhook_secret: str = Field(default="", description="HMAC-SHA256 key of X-Vertac-Signature.")
    smtp_host: str = Field(default="", description="SMTP server; empty: no e-mail.")
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "vertac@localhost"
    mail_to: str = Field(default="", description="Recipients, comma separated.")
