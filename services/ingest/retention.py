"""Retention by dropping daily partitions: ``live_frames`` by the UTC day of a frame's first
sample (``VERTAC_RAW_RETENTION_DAYS``), the rollups by the day of their buckets
(``VERTAC_ROLLUP_RETENTION_DAYS``). No row is ever deleted one by one, and the days ahead are
created before their rows arrive. Cycle recordings, references and datasets live elsewhere and
are not touched."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
DAY_NS = 86_400_000_000_000
EPOCH = date(1970, 1, 1)
AHEAD_DAYS = 2
_LOCK_ID = 0x76_74_72_65_74  # "vtret": one replica maintains at a time


def day_of(t_ns: int) -> date:
    """The UTC day of a nanosecond timestamp (the partition it belongs to)."""
    return EPOCH + timedelta(days=t_ns // DAY_NS)


async def ensure_days(conn: psycopg.AsyncConnection, table: str, days: set[date]) -> None:
    """Create the daily partitions of ``table`` for ``days`` that do not exist yet."""
    for day in sorted(days):
        try:
            async with conn.transaction():
                if table == "live_frames":
                    await conn.execute("SELECT vertac_frames_partition(%s)", (day,))
                else:
                    await conn.execute("SELECT vertac_day_partition(%s, %s)", (table, day))
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            pass  # another replica created it at the same moment


async def partitions(conn: psycopg.AsyncConnection, table: str) -> dict[date, str]:
    """The daily partitions of ``table``: day -> name."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (table,),
    )
    found = {}
    pattern = re.compile(rf"^{re.escape(table)}_(\d{{8}})$")
    for (name,) in await cur.fetchall():
        m = pattern.match(name)
        if m:
            found[datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).date()] = name
    return found


def plan(raw_retention_days: float, rollup_retention_days: float) -> dict[str, float]:
    """Days kept per partitioned table."""
    return {
        "live_frames": raw_retention_days,
        "live_rollup_1s": rollup_retention_days,
        "live_rollup_1m": rollup_retention_days,
    }


async def maintain(
    pool: AsyncConnectionPool, keep_days: dict[str, float], now: datetime | None = None
) -> list[str]:
    """Create today's and the next days' partitions of each table, drop those wholly older
    than the table's retention; returns the partitions dropped (none when another replica
    holds the lock)."""
    now = now or datetime.now(UTC)
    today = now.date()
    dropped: list[str] = []
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,))
            row = await cur.fetchone()
            if not row or not row[0]:
                return dropped
            try:
                for table, days in keep_days.items():
                    ahead = {today + timedelta(days=k) for k in range(AHEAD_DAYS + 1)}
                    await ensure_days(conn, table, ahead)
                    dropped += await _expire(conn, table, now - timedelta(days=days), days)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        finally:
            with contextlib.suppress(Exception):
                await conn.set_autocommit(False)
    return dropped


async def _expire(
    conn: psycopg.AsyncConnection, table: str, cutoff: datetime, days: float
) -> list[str]:
    dropped = []
    for day, name in sorted((await partitions(conn, table)).items()):
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        if end > cutoff:
            continue
        t0 = time.perf_counter()
        # a short lock wait: ingest's inserts go first, the drop comes back next time
        await conn.execute("SET lock_timeout = '5s'")
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        except psycopg.errors.LockNotAvailable:
            log.warning("partition busy, dropping it later", extra={"partition": name})
            continue
        finally:
            await conn.execute("RESET lock_timeout")
        dropped.append(name)
        log.info(
            "partition dropped",
            extra={
                "partition": name,
                "retention_days": days,
                "took_ms": round((time.perf_counter() - t0) * 1000, 1),
            },
        )
    return dropped


async def maintain_once(pool: AsyncConnectionPool, keep_days: dict[str, float]) -> None:
    """:func:`maintain`, with an unreachable database left for the next time."""
    try:
        await maintain(pool, keep_days)
    except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
        log.warning("retention deferred, PostgreSQL unavailable", extra={"error": str(exc)})


async def keep(
    pool: AsyncConnectionPool, keep_days: dict[str, float], every_s: float, stop: asyncio.Event
) -> None:
    """Run :func:`maintain` every ``every_s`` until ``stop`` (ingest runs it once at start,
    before it consumes: a frame stored after that stays until the next time at least)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if not stop.is_set():
            await maintain_once(pool, keep_days)
