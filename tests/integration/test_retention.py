"""Raw retention on a real PostgreSQL: frames live in daily partitions; a day older than
``VERTAC_RAW_RETENTION_DAYS`` goes by dropping its partition, by itself, while ingest runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from services.common.config import CommonSettings
from services.common.db import migration_files
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from services.ingest.retention import day_of
from tests.conftest import eventually
from tests.helpers import frame_count

pytestmark = pytest.mark.integration
NS = 1_000_000_000


async def partition_names(url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'live_frames'::regclass"
        )
        return {row[0] for row in await cur.fetchall()}


def name_of(t_ns: int) -> str:
    return f"live_frames_{day_of(t_ns):%Y%m%d}"


async def test_a_week_old_partition_disappears_by_itself(
    bus, common: CommonSettings, running, stream_id: str
) -> None:
    week_ago = time.time_ns() - 7 * 86400 * NS
    old, new = f"{stream_id}-old", f"{stream_id}-new"
    # ingest at its defaults (7 days) keeps a frame 7 days old: its day ends less than 7 days ago
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    await simulate(
        bus,
        build_machine(stream_id=old, sensors=2),
        SimulateOptions(frames=20, speed=0, start_ns=week_ago),
    )
    await simulate(
        bus, build_machine(stream_id=new, sensors=2), SimulateOptions(frames=20, speed=0)
    )
    await eventually(lambda: _both(common.database_url, old, new), timeout=60)
    names = await partition_names(common.database_url)
    today = datetime.now(UTC).date()
    assert name_of(week_ago) in names
    for ahead in range(3):  # today and the next two days are there before their frames
        assert f"live_frames_{today + timedelta(days=ahead):%Y%m%d}" in names
    # a second ingest (a replica) with a shorter retention: the week-old day goes by itself
    shorter = common.model_copy(update={"raw_retention_days": 2})
    running.start(
        serve_ingest(IngestSettings(metrics_port=0, retention_check_s=0.5), shorter, running.stop)
    )

    async def gone() -> bool:
        return name_of(week_ago) not in await partition_names(common.database_url)

    await eventually(gone, timeout=60)
    assert await frame_count(common.database_url, old) == 0
    assert await frame_count(common.database_url, new) == 20  # today's frames stay
    assert not running.failures()


async def _both(url: str, a: str, b: str) -> bool:
    return await frame_count(url, a) == 20 and await frame_count(url, b) == 20


async def test_frames_stored_before_partitioning_move_into_their_days(pg_cluster) -> None:
    """A database of the previous release (migrations up to 0004) with frames of three days is
    migrated: every frame is in its day's partition, once, and a frame sent again is still
    dropped."""
    from services.common.db import migrate

    url = pg_cluster.new_database()
    earlier = [(v, sql) for v, sql in migration_files() if v < "0005"]
    t_days = [time.time_ns() - k * 86400 * NS for k in (0, 1, 5)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in earlier:
            await conn.execute(sql.encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        for seq, t in enumerate(t_days):
            await conn.execute(
                "INSERT INTO live_frames (stream_id, seq, t_first_ns, t_last_ns, n_samples,"
                " n_sensors, payload) VALUES ('old-1', %s, %s, %s, 1, 1, %s)",
                (seq, t, t, b"x" * 10),
            )
    applied = await migrate(url)
    assert "0005" in [v[:4] for v in applied]
    names = await partition_names(url)
    assert {name_of(t) for t in t_days} <= names
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT tableoid::regclass::text, seq FROM live_frames WHERE stream_id = 'old-1' ORDER BY seq"
        )
        rows = await cur.fetchall()
        assert rows == [(name_of(t), seq) for seq, t in enumerate(t_days)]
        cur = await conn.execute(
            "INSERT INTO live_frames (stream_id, seq, t_first_ns, t_last_ns, n_samples, n_sensors,"
            " payload) VALUES ('old-1', 0, %s, %s, 1, 1, 'x') ON CONFLICT (stream_id, seq, t_first_ns)"
            " DO NOTHING RETURNING seq",
            (t_days[0], t_days[0]),
        )
        assert await cur.fetchall() == []
