"""Settings of the gateway (env prefix ``VERTAC_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERTAC_GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, ge=0, le=65535)
    ws_interval_ms: int = Field(
        default=50, ge=10, le=5000, description="How often a WebSocket gets decimated samples."
    )
    ws_points_per_second: int = Field(
        default=200, ge=1, le=100_000,
        description="Buckets per sensor and second sent to a browser (min/max per bucket).",
    )  # fmt: skip
    ws_queue: int = Field(default=64, ge=1, description="Messages buffered per slow WebSocket.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (https://host:port) whose pages may call the API and open "
        "WebSockets; none by default: only the gateway's own pages and non-browser clients.",
    )
    max_body_bytes: int = Field(
        default=8 * 2**20,
        ge=1024,
        description="Largest request body (dataset imports: 256 MiB); larger ones get 413.",
    )
    import_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long a dataset import may take at the cycles service (which parses "
        "and stores it) before the request answers 504.",
    )
    oidc_issuer: str = Field(
        default="",
        description="OIDC provider whose bearer JWTs are accepted beside API tokens (its 'iss'); "
        "empty: tokens only.",
    )
    oidc_audience: str = Field(default="vertac", description="The 'aud' a JWT must carry.")
    oidc_jwks_url: str = Field(
        default="", description="The provider's key set; default <issuer>/.well-known/jwks.json."
    )
    oidc_role_claim: str = Field(
        default="vertac_role",
        description="Claim holding the role (viewer, operator or admin; a string or a list).",
    )
    tls_certfile: str = Field(default="", description="Serve HTTPS with this certificate (PEM).")
    tls_keyfile: str = Field(default="", description="Its private key (PEM).")

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("VERTAC_GATEWAY_TLS_CERTFILE and _TLS_KEYFILE go together")
        return self

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes sharing the port (SO_REUSEPORT); each is stateless.",
    )
