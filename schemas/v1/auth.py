"""Version 1 contracts: sign-in, API tokens and the audit trail (REST bodies and answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from schemas.v1.base import Contract, StreamId

Role = Literal["viewer", "operator", "admin", "edge"]
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"  # noqa: S105 (a pattern)


class SignIn(Contract):
    """Body of ``POST /api/auth/session``: an API token, kept by the browser as a cookie."""

    token: str = Field(min_length=1, max_length=400, description="An API token (vtk_...).")


class WhoAmI(Contract):
    """Answer of ``GET /api/auth/me``: who the request is from and what the role allows."""

    name: str = Field(description="Token name or OIDC subject; 'anonymous' with auth off.")
    role: Role
    streams: list[StreamId] = Field(
        default_factory=list, description="Streams an edge token may post samples for."
    )
    via: Literal["token", "oidc", "anonymous"] = "token"
    auth: bool = Field(default=True, description="False when the gateway runs with auth off.")


class NewToken(Contract):
    """Body of ``POST /api/auth/tokens``."""

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="Who or what uses the token.")
    role: Role
    streams: list[StreamId] = Field(
        default_factory=list, max_length=1000, description="For role edge: its streams (1 or more)."
    )


class TokenInfo(Contract):
    """One API token (never its secret)."""

    token_id: str
    name: str
    role: Role
    streams: list[str] = Field(default_factory=list)
    created_at: datetime
    created_by: str = ""
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class TokenCreated(Contract):
    """Answer of ``POST /api/auth/tokens``: the token, shown this once."""

    token: str = Field(description="Send as 'Authorization: Bearer <token>'; not shown again.")
    info: TokenInfo


class AuditEntry(Contract):
    """One change made through the API or the command line."""

    id: int
    at: datetime
    actor: str = Field(description="Token name or OIDC subject.")
    role: str
    via: str = Field(
        default="",
        description="How the actor signed in: token, oidc, cli (the command line on the host) "
        "or anonymous (auth off); empty for changes recorded before 0.14.",
    )
    action: str = Field(description="e.g. cycle.start, alert.ack, alert_rule.put, token.create.")
    target: str = Field(default="", description="What was changed: stream, rule, alert, ...")
    before: Any = None
    after: Any = None
