"""The embedded PostgreSQL (what ``vertac run`` starts) checks a password on every connection,
and the services' role is no superuser: it owns VerTac's database and nothing else. Every other
test runs its migrations and services as that role too."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import PgCluster

pytestmark = pytest.mark.integration


def test_every_connection_needs_a_password_and_the_services_role_is_no_superuser(
    pg_cluster: PgCluster, database_url: str
) -> None:
    if pg_cluster.server is None:
        pytest.skip("VERTAC_TEST_PG_ADMIN_URL names a server this project did not set up")
    server = pg_cluster.server
    assert server.secrets_file.stat().st_mode & 0o777 == 0o600
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    assert info["user"] == "vertac" and info.get("password")
    for user, db in (("postgres", "postgres"), ("vertac", info["dbname"])):
        stranger = f"postgresql://{user}@127.0.0.1:{server.port}/{db}"
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(stranger, connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(stranger.replace(f"{user}@", f"{user}:guess@"), connect_timeout=5)
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False, False)
        # the migrated tables are its own
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert owners == [("vertac",)]
        for statement in ("CREATE ROLE intruder LOGIN", "CREATE DATABASE other",
                          "COPY (SELECT 1) TO PROGRAM 'true'",
                          "SELECT pg_read_file('/etc/passwd')"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
