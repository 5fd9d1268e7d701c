"""PostgreSQL access shared by the services: a connection pool and the schema migrations."""

from __future__ import annotations

import logging
import time
import weakref
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from edge.client import with_startup_retry

log = logging.getLogger(__name__)
_LOCK_ID = 0x5E47AC  # advisory lock: one migrator at a time
CHECK_IDLE_S = 5.0  # a pooled connection idle longer than this is checked before it is lent
_returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check: a round trip only for a connection that sat idle (PostgreSQL may have
    restarted meanwhile). One used a moment ago is lent as it is; should it be broken after all,
    the statement fails as a transient error and is retried on a new connection."""
    if time.monotonic() - _returned.get(conn, 0.0) > CHECK_IDLE_S:
        await AsyncConnectionPool.check_connection(conn)


async def _note_return(conn: psycopg.AsyncConnection[Any]) -> None:
    _returned[conn] = time.monotonic()


SERVICES = ("ingest", "cycles", "analysis", "alerts", "gateway")
"""The services that own tables: each has a schema of that name and the role ``vertac_<name>``
(migration 0011). Its connections take the role on, with its schema and ``api`` (the read-only
views the owners publish) on the search path, so PostgreSQL refuses any other table."""


OWNED: dict[str, tuple[str, ...]] = {
    "ingest": ("live_streams", "live_frames", "live_stream_stats", "live_rollup_1s",
               "live_rollup_1m"),
    "cycles": ("live_cycles", "live_dataset_cycles"),
    "analysis": ("live_deviations", "live_references", "live_models"),
    "alerts": ("live_alerts", "live_alert_history"),
    "gateway": ("auth_tokens", "audit_log"),
}  # fmt: skip
"""Each service's tables, in its schema; only it reads and writes them."""

PUBLISHED: tuple[str, ...] = (
    "live_streams", "live_stream_stats", "live_frames", "live_rollup_1s", "live_rollup_1m",
    "live_cycles", "live_dataset_cycles", "live_deviations", "live_references", "live_alerts",
    "live_alert_history",
)  # fmt: skip
"""The tables whose owners publish a read-only view of the same name in schema ``api``."""

READS: dict[str, tuple[str, ...]] = {
    "gateway": PUBLISHED,  # it serves them (REST, history, reports)
    "analysis": ("live_cycles", "live_dataset_cycles"),  # recorded cycles to compare or build on
    "alerts": ("live_references",),  # the active reference, for the envelope rule
}
"""The published views each service may read (the others none)."""


def role_of(service: str) -> str:
    return f"vertac_{service}"


def service_options(url: str, service: str) -> str:
    """The connection's startup options for ``service``: its role and search path, after any
    options the URL already gives."""
    if service not in SERVICES:
        raise ValueError(f"no database role for {service!r}; one of {', '.join(SERVICES)}")
    given = str(psycopg.conninfo.conninfo_to_dict(url).get("options") or "")
    own = f"-c role={role_of(service)} -c search_path={service},api"
    return f"{given} {own}".strip()


def migration_files(package: str = "services.common") -> list[tuple[str, str]]:
    """(version, SQL) of every migration of ``package``'s folder ``migrations``, in order: the
    platform's (``services.common``: roles, schemas, the tables' history) or one service's."""
    folder = resources.files(package) / "migrations"
    if not folder.is_dir():
        return []
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(url: str) -> list[str]:
    """Apply pending migrations; returns the versions applied now (a service's as
    ``<service>/<version>``).

    First the platform's (``services/common/migrations``, kept in ``public.schema_migrations``),
    then each service's own (``services/<service>/migrations``), applied as the service's role
    with only its schema and ``api`` on the search path and kept in its own
    ``<service>.schema_migrations``: PostgreSQL refuses a service's migration anything outside
    what that service owns."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            applied += await _apply(conn, "public", migration_files())
            for service in SERVICES:
                files = migration_files(f"services.{service}")
                if files:
                    applied += [f"{service}/{v}" for v in await _apply(conn, service, files)]
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


async def _apply(
    conn: psycopg.AsyncConnection[Any], schema: str, files: list[tuple[str, str]]
) -> list[str]:
    """Apply the files not yet in ``<schema>.schema_migrations``, each in a transaction (a
    service's as its role)."""
    as_service = schema != "public"
    kept = sql.Identifier(schema, "schema_migrations")

    async def become() -> None:
        if as_service:
            await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role_of(schema))))
            await conn.execute(
                sql.SQL("SET LOCAL search_path = {}, api").format(sql.Identifier(schema))
            )

    applied: list[str] = []
    async with conn.transaction():
        await become()
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(kept)
        )
        cur = await conn.execute(sql.SQL("SELECT version FROM {}").format(kept))
        done = {row[0] for row in await cur.fetchall()}
    for version, text in files:
        if version in done:
            continue
        async with conn.transaction():
            await become()
            await conn.execute(text.encode())
            await conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(kept), (version,)
            )
        applied.append(version)
        log.info("migration applied", extra={"version": version, "schema": schema})
    return applied


async def open_pool(
    url: str,
    *,
    retry: bool,
    name: str,
    max_size: int = 4,
    migrate_first: bool = False,
    service: str | None = None,
) -> AsyncConnectionPool:
    """Open a pool once the database answers (or fail fast when ``retry`` is off). With
    ``service``, every connection acts as that service's role (see ``SERVICES``); without, as
    the URL's user (the CLI and the stack, which administer the database)."""

    async def probe() -> None:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=3)
        await conn.close()

    await with_startup_retry(f"PostgreSQL at {_redact(url)}", probe, retry=retry)
    if migrate_first:
        await migrate(url)
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        name=name,
        open=False,
        check=_check_if_idle,
        reset=_note_return,
        kwargs={"connect_timeout": 5}
        | ({"options": service_options(url, service)} if service else {}),
    )
    await pool.open(wait=True, timeout=15)
    return pool


def _redact(url: str) -> str:
    """The URL without its password, for log lines and errors."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
