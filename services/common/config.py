"""Settings shared by every service (env prefix ``VERTAC_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from edge.client import BusSettings, local_admin_url
from schemas import subjects

EMBEDDED_URL = "postgresql://vertac@127.0.0.1:55432/vertac"
EMBEDDED_SECRETS = Path(".vertac") / "pg.secrets"


class CommonSettings(BusSettings):
    """Where the servers are and how the bus is laid out; read once in each ``app.py``. The
    bus and log settings come from :class:`edge.client.BusSettings` (the edge's too)."""

    model_config = SettingsConfigDict(env_prefix="VERTAC_", extra="ignore")

    database_url: str = Field(
        default=EMBEDDED_URL,
        description="PostgreSQL URL (default: vertac run's, password from .vertac/pg.secrets).",
    )
    bus_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas per stream.")
    site: str = Field(
        default="",
        pattern=r"^$|" + subjects.SITE_PATTERN,
        description="This plant's site id when it is a site of a central VerTac: its control "
        "stream then also takes central's commands for it.",
    )
    sites: str = Field(
        default="",
        pattern=r"^$|^[a-z0-9][a-z0-9_-]{0,31}(,[a-z0-9][a-z0-9_-]{0,31})*$",
        description="At a central VerTac: the ids of the sites whose data it stores and shows "
        "(comma-separated; vertac central --site sets it).",
    )
    samples_max_age_s: float = Field(
        default=7 * 86400, gt=0, description="Samples kept on the bus."
    )
    samples_max_bytes: int = Field(
        default=10 * 1024**3, description="Bytes of samples kept; -1 unlimited."
    )
    events_max_age_s: float = Field(
        default=30 * 86400, gt=0, description="Cycle/analysis/alert events kept."
    )
    events_max_bytes: int = Field(
        default=1024**3, description="Bytes per event stream; -1 unlimited."
    )
    duplicate_window_s: float = Field(
        default=120, gt=0, description="JetStream de-duplication window."
    )
    max_deliver: int = Field(
        default=20,
        ge=1,
        description="Deliveries (its process died while handling it) before a message is "
        "dead-lettered; outages are retried in place and do not count.",
    )
    raw_retention_days: float = Field(
        default=7,
        gt=0,
        description="Days of raw frames kept in PostgreSQL (whole days: a day's partition goes "
        "once all of it is older).",
    )
    rollup_retention_days: float = Field(
        default=90, gt=0, description="Days of 1 s and 1 min rollups kept in PostgreSQL."
    )
    auth: Literal["on", "off"] = Field(
        default="on",
        description="on: every API call but /api/health needs a token or an OIDC JWT; off: "
        "anyone who reaches the gateway is admin (warned about at start).",
    )
    auto_migrate: bool = Field(
        default=True, description="ingest and gateway apply pending migrations at start."
    )

    @property
    def site_ids(self) -> tuple[str, ...]:
        """The sites of a central VerTac (none elsewhere)."""
        return tuple(s for s in self.sites.split(",") if s)

    @model_validator(mode="after")
    def _embedded_password(self) -> CommonSettings:
        """The default URLs are those of ``vertac run``'s servers: take their passwords from
        ``.vertac/pg.secrets`` and ``.vertac/nats.secrets`` (as admin) when the command runs
        beside it (``vertac auth token``, ``vertac bus init``, a service started by hand)."""
        object.__setattr__(self, "nats_url", local_admin_url(self.nats_url))
        if self.database_url == EMBEDDED_URL and EMBEDDED_SECRETS.is_file():
            try:
                password = json.loads(EMBEDDED_SECRETS.read_text())["vertac"]
            except (OSError, ValueError, KeyError):
                return self
            object.__setattr__(
                self, "database_url", EMBEDDED_URL.replace("vertac@", f"vertac:{password}@", 1)
            )
        return self
