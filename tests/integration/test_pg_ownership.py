"""Each service owns its tables: connected as a service (its role and search path, as the
services connect), PostgreSQL lets it read and write its own tables, read the views other
services publish to it, and refuses everything else."""

from __future__ import annotations

import psycopg
import pytest

from services.common.db import (
    OWNED,
    PUBLISHED,
    READS,
    SERVICES,
    _apply,
    migration_files,
    service_options,
)
from tests.conftest import PgCluster

pytestmark = pytest.mark.integration


def refused(conn: psycopg.Connection, statement: str) -> bool:
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_the_schemas_hold_what_each_service_declares(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for service, tables in OWNED.items():
            found = conn.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
                (service,),
            ).fetchall()
            own = [
                *tables,
                *(["schema_migrations"] if migration_files(f"services.{service}") else []),
            ]
            assert sorted(found) == sorted((t, f"vertac_{service}") for t in own), service
        views = conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'api'"
        ).fetchall()
        assert sorted(v for (v,) in views) == sorted(PUBLISHED)
        left = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        ).fetchall()
        assert left == [("schema_migrations",)]
        # scripts and Grafana connect without a role and still find every table by its name
        for tables in OWNED.values():
            for table in tables:
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.execute("SELECT count(*) FROM sensor_rollup_1m").fetchone()


@pytest.mark.parametrize("service", SERVICES)
def test_postgresql_refuses_a_service_every_table_but_its_own(
    database_url: str, service: str
) -> None:
    options = service_options(database_url, service)
    with psycopg.connect(database_url, options=options, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (f"vertac_{service}",)
        for owner, tables in OWNED.items():
            for table in tables:
                read = f"SELECT 1 FROM {owner}.{table} LIMIT 1"
                write = f"DELETE FROM {owner}.{table} WHERE false"
                mine = owner == service
                assert refused(conn, read) is not mine, f"{service} reading {owner}.{table}"
                assert refused(conn, write) is not mine, f"{service} writing {owner}.{table}"
        for view in PUBLISHED:
            may_read = view in READS.get(service, ()) or view in OWNED[service]
            read = f"SELECT 1 FROM api.{view} LIMIT 1"
            assert refused(conn, read) is not may_read, f"{service} reading api.{view}"
            assert refused(conn, f"DELETE FROM api.{view} WHERE false"), f"{service} api.{view}"
        # by their plain names, as the services' SQL writes them: its own tables, else the views
        if service != "cycles":
            assert refused(conn, "INSERT INTO live_cycles (cycle_id) VALUES ('x')")
        if service != "gateway":  # another's private table is not even on its search path
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT 1 FROM auth_tokens")
        for statement in (
            "CREATE TABLE public.intruder (x int)",
            "CREATE TABLE api.intruder (x int)",
            "CREATE VIEW api.live_models AS SELECT 1 AS x",
            f"CREATE TABLE {'ingest' if service != 'ingest' else 'cycles'}.intruder (x int)",
        ):
            assert refused(conn, statement), statement


def test_with_its_own_login_a_service_cannot_take_on_another_role(
    pg_cluster: PgCluster, database_url: str
) -> None:
    """``vertac run`` gives each service its own login: not even ``SET ROLE`` reaches the
    tables of another service, or those of the database's owner."""
    if pg_cluster.server is None:
        pytest.skip("VERTAC_TEST_PG_ADMIN_URL names a server this project did not set up")
    for service in SERVICES:
        info = psycopg.conninfo.conninfo_to_dict(pg_cluster.server.service_url(service))
        info["dbname"] = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
        url = psycopg.conninfo.make_conninfo(**info)
        with psycopg.connect(url, options=service_options(url, service), autocommit=True) as conn:
            assert conn.execute("SELECT session_user, current_user").fetchone() == (
                f"vertac_{service}",
                f"vertac_{service}",
            )
            other = "ingest" if service != "ingest" else "cycles"
            for statement in (f"SET ROLE vertac_{other}", "SET ROLE vertac", "SET ROLE postgres",
                              f"RESET ROLE; SELECT 1 FROM {other}.{OWNED[other][0]}"):  # fmt: skip
                assert refused(conn, statement), f"{service}: {statement}"


async def test_a_service_migrates_only_what_it_owns(database_url: str) -> None:
    """A service's migrations run as its role: PostgreSQL refuses one that reaches another
    service's table, and keeps what each applied in the service's own schema."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        kept = await conn.execute("SELECT version FROM ingest.schema_migrations")
        assert [v for (v,) in await kept.fetchall()] == ["0001_day_partitions"]
        owner = await conn.execute(
            "SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE n.nspname = 'ingest'"
            " AND p.proname = 'vertac_frames_partition'"
        )
        assert await owner.fetchone() == ("vertac_ingest",)
        intrude = [("9001_intrude", "ALTER TABLE cycles.live_cycles ADD COLUMN intruder int")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await _apply(conn, "analysis", intrude)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await _apply(conn, "analysis", [("9002_api", "CREATE VIEW api.x AS SELECT 1 AS x")])
        own = [("9003_own", "CREATE INDEX live_models_test_idx ON live_models (stream_id)")]
        assert await _apply(conn, "analysis", own) == ["9003_own"]
        assert await _apply(conn, "analysis", own) == []  # applied once
        schema = await conn.execute(
            "SELECT n.nspname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'live_models_test_idx'"
        )
        assert await schema.fetchone() == ("analysis", "vertac_analysis")
        rows = await conn.execute("SELECT version FROM analysis.schema_migrations")
        assert [v for (v,) in await rows.fetchall()] == ["9003_own"]
