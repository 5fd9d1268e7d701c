"""Reading back what the services stored, for assertions."""

from __future__ import annotations

import psycopg

from schemas.frames import Frame
from services.ingest.logic import from_payload


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
