"""API tokens and the audit trail in PostgreSQL (tables ``auth_tokens`` and ``audit_log``).

A token reads ``vtk_<token id>_<secret>``. Only the SHA-256 of the secret is stored: the secret
is 256 random bits, so a plain hash is as strong as a slow one and checking it costs nothing.
Used by the gateway (to check requests), ``vertac auth token`` and ``vertac run`` (to make the
first admin token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from schemas.messages import AuditEntry, TokenInfo

ROLES = ("viewer", "operator", "admin", "edge")
RANK = {"viewer": 1, "operator": 2, "admin": 3}
PREFIX = "vtk_"
_TOKEN = re.compile(r"^vtk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""

    name: str
    role: str
    streams: tuple[str, ...] = ()
    via: str = "token"
    token_id: str | None = None

    def allows(self, needed: str) -> bool:
        """Whether this role may do what ``needed`` may: admin may everything; operator what
        a viewer may; an edge only posts samples (``edge``) for its streams."""
        if self.role == "admin":
            return True
        if needed == "edge" or self.role == "edge":
            return self.role == needed
        return RANK[self.role] >= RANK[needed]

    def may_write(self, stream_id: str) -> bool:
        """Whether this principal may post samples to (or register) ``stream_id``."""
        return self.role == "admin" or (self.role == "edge" and stream_id in self.streams)


ANONYMOUS = Principal("anonymous", "admin", via="anonymous")


class InvalidToken(ValueError):
    """A token that is malformed, unknown or revoked (the reason is not told to the caller)."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(token: str) -> tuple[str, str]:
    """(token id, secret) of a well-formed token; :class:`InvalidToken` otherwise."""
    found = _TOKEN.fullmatch(token.strip())
    if found is None:
        raise InvalidToken("not a VerTac token (vtk_<id>_<secret>)")
    return found.group(1), found.group(2)


def mint() -> tuple[str, str, bytes]:
    """A new (token, token id, secret hash)."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return f"{PREFIX}{token_id}_{secret}", token_id, _digest(secret)


_INSERT = (
    "INSERT INTO auth_tokens (token_id, name, role, streams, secret_hash, created_by)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " RETURNING token_id, name, role, streams, created_at, created_by, revoked_at, last_used_at"
)
_LIST = (
    "SELECT token_id, name, role, streams, created_at, created_by, revoked_at, last_used_at"
    " FROM auth_tokens WHERE %s OR revoked_at IS NULL ORDER BY created_at"
)
_ONE = (
    "SELECT token_id, name, role, streams, created_at, created_by, revoked_at, last_used_at"
    " FROM auth_tokens WHERE token_id = %s"
)
_REVOKE = (
    "UPDATE auth_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL"
    " RETURNING token_id, name, role, streams, created_at, created_by, revoked_at, last_used_at"
)


@dataclass
class TokenStore:
    """Tokens in ``auth_tokens``."""

    pool: AsyncConnectionPool
    touched: dict[str, float] = field(default_factory=dict)

    async def create(
        self, name: str, role: str, streams: list[str] | None = None, created_by: str = ""
    ) -> tuple[str, TokenInfo]:
        """A new token (returned this once) and its row."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role == "edge" and not streams:
            raise ValueError("an edge token needs at least one stream")
        if name.startswith("cli:"):
            raise ValueError("names starting with 'cli:' are the command line's own")
        token, token_id, digest = mint()
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(TokenInfo)) as cur,
        ):
            await cur.execute(
                _INSERT,
                (token_id, name, role, list(streams or []), digest, created_by),
            )
            info = await cur.fetchone()
        assert info is not None
        return token, info

    async def list(self, include_revoked: bool = False) -> list[TokenInfo]:

        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(TokenInfo)) as cur,
        ):
            await cur.execute(
                _LIST,
                (include_revoked,),
            )
            return await cur.fetchall()

    async def one(self, token_id: str) -> TokenInfo | None:
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(TokenInfo)) as cur,
        ):
            await cur.execute(
                _ONE,
                (token_id,),
            )
            return await cur.fetchone()

    async def revoke(self, token_id: str) -> TokenInfo | None:
        """Revoke a token (kept for the audit trail); None when unknown or already revoked."""
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(TokenInfo)) as cur,
        ):
            await cur.execute(
                _REVOKE,
                (token_id,),
            )
            return await cur.fetchone()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`InvalidToken` otherwise."""
        token_id, secret = parse(token)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT name, role, streams, secret_hash FROM auth_tokens"
                " WHERE token_id = %s AND revoked_at IS NULL",
                (token_id,),
            )
            row = await cur.fetchone()
            if row is None or not hmac.compare_digest(bytes(row[3]), _digest(secret)):
                raise InvalidToken("unknown or revoked token")
            await conn.execute(
                "UPDATE auth_tokens SET last_used_at = now() WHERE token_id = %s"
                " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                (token_id,),
            )
        return Principal(row[0], row[1], tuple(row[2]), "token", token_id)


@dataclass
class AuditLog:
    """Changes in ``audit_log``, newest last."""

    pool: AsyncConnectionPool

    async def record(
        self,
        who: Principal,
        action: str,
        target: str = "",
        before: Any = None,
        after: Any = None,
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO audit_log (actor, role, via, action, target, before, after)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (who.name, who.role, who.via, action, target, _json(before), _json(after)),
            )

    async def find(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries newest first; ``action`` may end with ``*`` (``alert_rule.*``)."""
        where: list[str] = ["TRUE"]
        args: list[object] = []
        if since is not None:
            where.append("at >= %s")
            args.append(since)
        if until is not None:
            where.append("at < %s")
            args.append(until)
        if actor:
            where.append("actor = %s")
            args.append(actor)
        if action:
            if action.endswith("*"):
                where.append("action LIKE %s")
                args.append(action[:-1].replace("%", r"\%").replace("_", r"\_") + "%")
            else:
                where.append("action = %s")
                args.append(action)
        sql = psycopg.sql.SQL(
            "SELECT id, at, actor, role, via, action, target, before, after FROM audit_log"
            " WHERE {} ORDER BY id DESC LIMIT %s"
        ).format(psycopg.sql.SQL(" AND ").join(map(psycopg.sql.SQL, where)))
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(AuditEntry)) as cur,
        ):
            await cur.execute(sql, [*args, limit])
            return await cur.fetchall()


def _json(value: Any) -> Jsonb | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return Jsonb(json.loads(json.dumps(value, default=str)))


async def ensure_admin_token(pool: AsyncConnectionPool, kept: str | None) -> tuple[str, bool]:
    """The admin token ``kept`` (from ``<data-dir>/admin.token``) when it is still valid, else a
    new one (a new database, a revoked token); returns it and whether it is new."""
    store = TokenStore(pool)
    if kept:
        try:
            who = await store.verify(kept.strip())
            if who.role == "admin":
                return kept.strip(), False
        except InvalidToken:
            pass
    token, info = await store.create("admin", "admin", created_by="vertac run")
    await AuditLog(pool).record(
        Principal("vertac run", "admin", via="cli"), "token.create", info.token_id, None, info
    )
    return token, True


def read_secrets(path: Path) -> dict[str, str]:
    """The ``{name: password}`` a file of :func:`write_secret` keeps; empty when there is none."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
