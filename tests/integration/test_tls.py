"""TLS to NATS and PostgreSQL with certificates of a CA made in the test: the services' bus
connection verifies the server (and shows a client certificate where the server asks for
one); a PostgreSQL URL with ``sslmode=verify-full`` works through the services' pool. A wrong
CA, or no client certificate, is refused with a clear reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from edge.client import ServerUnreachable, connect
from services.common.config import CommonSettings
from services.common.db import open_pool
from services.common.runtime import open_bus
from services.embedded import NatsServer, Postgres, free_port
from services.pki import make_ca, make_leaf, write_cert, write_key
from tests.helpers import debian_postgres

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca("VerTac test CA", days=1)
    server, server_key = make_leaf("vertac-server", ca, ca_key, names=["localhost", "127.0.0.1"])
    client, client_key = make_leaf("ingest", ca, ca_key, server=False, client=True)
    other, _ = make_ca("Somebody else's CA", days=1)
    return Pki(
        write_cert(ca, d / "ca.pem"), write_cert(server, d / "server.pem"),
        write_key(server_key, d / "server.key"), write_cert(client, d / "client.pem"),
        write_key(client_key, d / "client.key"), write_cert(other, d / "other-ca.pem"),
    )  # fmt: skip


async def test_the_bus_is_reached_over_tls_with_verified_certificates_both_ways(
    pki: Pki, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port(), monitor_port=free_port(),
                        tls_cert=pki.server_cert, tls_key=pki.server_key,
                        tls_ca=pki.ca).start()  # fmt: skip
    try:
        assert server.url.startswith("tls://")
        good = CommonSettings(nats_url=server.url, nats_tls_ca=str(pki.ca),
                              nats_tls_cert=str(pki.client_cert),
                              nats_tls_key=str(pki.client_key))  # fmt: skip
        bus = await open_bus(good, "vertac-test-tls")  # declares the JetStream layout
        try:
            ack = await bus.js.publish("vertac.samples.tls-1", b"x", stream="VERTAC_SAMPLES")
            assert ack.seq >= 1
        finally:
            await bus.close()
        with pytest.raises(ServerUnreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await connect(good.model_copy(update={"nats_tls_ca": str(pki.other_ca)}), "t")
        with pytest.raises(ServerUnreachable):  # the server asks for a client certificate
            await connect(good.model_copy(update={"nats_tls_cert": "", "nats_tls_key": ""}), "t")
        with pytest.raises(ServerUnreachable, match="VERTAC_NATS_TLS_CA"):
            await connect(good.model_copy(update={"nats_tls_ca": str(tmp_path / "no.pem")}), "t")
    finally:
        server.stop()


async def test_postgresql_is_reached_over_tls_with_verify_full(pki: Pki, tmp_path: Path) -> None:
    pg = Postgres(tmp_path / "pg", port=free_port(), tls_cert=pki.server_cert,
                  tls_key=pki.server_key, bin_dir=debian_postgres()).start()  # fmt: skip
    try:
        url = f"{pg.url}?sslmode=verify-full&sslrootcert={pki.ca}"
        pool = await open_pool(url, retry=False, name="tls", migrate_first=True)
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                assert await cur.fetchone() == (True,)
        finally:
            await pool.close()
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(f"{pg.url}?sslmode=verify-full&sslrootcert={pki.other_ca}")
    finally:
        pg.stop()
