"""``vertac run``: the whole system on one machine without Docker.

Starts nats-server and PostgreSQL from their PyPI wheels with data under one folder, migrates,
declares the bus, starts every service and the simulator as its own process (restarting any that
dies), prints what runs where, and stops everything cleanly on Ctrl-C. A second run keeps the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nats.js.errors import KeyWrongLastSequenceError

from schemas import subjects
from schemas.logs import private_file, redact_text
from schemas.messages import CycleConfig
from services.common.auth import ensure_admin_token, write_secret
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import SERVICES, migrate, open_pool
from services.common.runtime import open_bus
from services.embedded import EmbeddedServerError, NatsServer, Postgres, wait_for_port
from services.federation import (
    CENTRAL_DOMAIN,
    SiteLink,
    leaf_user,
    link_site,
    site_leaf_remote,
)
from services.natsauth import ADMIN, BusUsers, edge_user, url_for

HEALTHY_S = 60.0  # a service that ran this long before dying restarts without backoff


@dataclass(frozen=True, slots=True)
class StackOptions:
    data_dir: Path = Path(".vertac")
    host: str = "127.0.0.1"
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    pg_port: int = 55432
    gateway_port: int = 8000
    metrics_base_port: int = 9101
    simulate: bool = True
    sim_args: tuple[str, ...] = ()
    influx_url: str = ""
    gateway_workers: int = 1
    site: str = ""  # a site of a federation: its id (the JetStream domain)
    central_url: str = ""  # a site: central's leaf-node URL (nats-leaf://site-<id>:...@host:7422)
    leaf_port: int = 0  # central: where sites' leaf nodes connect
    sites: tuple[str, ...] = ()  # central: the sites whose data it takes
    site_samples: tuple[tuple[str, str], ...] = ()  # central: (site, "digest"|"none"); else full
    leaf_tls_cert: Path | None = None  # central: TLS on the leaf port (with leaf_tls_key)
    leaf_tls_key: Path | None = None
    central_ca: Path | None = None  # a site: the CA that signed central's leaf certificate


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None  # when a child that died is due to start again

    def start(self) -> None:
        self.log_file = private_file(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.started_at = time.monotonic()

    def stop(self, timeout: float = 10) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_file is not None:
            self.log_file.close()


@dataclass
class Stack:
    options: StackOptions
    nats: NatsServer = field(init=False)
    pg: Postgres = field(init=False)
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        root = self.options.data_dir.resolve()
        self.bus_users = BusUsers(root / "nats.secrets", root / "nats.conf")
        o = self.options
        self.leaf_users = self.bus_users.leaf_users
        self.nats = NatsServer(
            root / "nats", o.nats_port, o.nats_monitor_port, o.host,
            config=self.bus_users.config_file,
            domain=o.site or (CENTRAL_DOMAIN if o.leaf_port else None),
            leaf_port=o.leaf_port or None,
            leaf_remotes=(
                (site_leaf_remote(o.central_url, ca=o.central_ca),) if o.central_url else ()
            ),
            leaf_tls_cert=o.leaf_tls_cert,
            leaf_tls_key=o.leaf_tls_key,
        )  # fmt: skip
        self.pg = Postgres(root / "pg", self.options.pg_port, self.options.host)

    def _bus_url(self, user: str) -> str:
        return url_for(self.nats.url, user, self.bus_users.passwords()[user])

    def _env(self, bus_user: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VERTAC_NATS_URL=self._bus_url(bus_user),
            VERTAC_DATABASE_URL=self.pg.url,
            VERTAC_STARTUP_RETRY="true",
            VERTAC_LOG_JSON="true",
            VERTAC_GATEWAY_HOST=self.options.host,
            VERTAC_GATEWAY_PORT=str(self.options.gateway_port),
            VERTAC_GATEWAY_WORKERS=str(self.options.gateway_workers),
            VERTAC_SITE=self.options.site,
            VERTAC_SITES=",".join(self.options.sites),
        )
        for i, name in enumerate(("INGEST", "CYCLES", "ANALYSIS", "ALERTS")):
            env[f"VERTAC_{name}_METRICS_PORT"] = str(self.options.metrics_base_port + i)
        if self.options.influx_url:
            env["VERTAC_INGEST_INFLUX_URL"] = self.options.influx_url
        if bus_user in SERVICES:
            # its own login: PostgreSQL refuses it every other service's tables; the stack has
            # migrated already, as the owner of the database
            env.update(
                VERTAC_DATABASE_URL=self.pg.service_url(bus_user), VERTAC_AUTO_MIGRATE="false"
            )
        return env

    def _plan(self) -> list[Child]:
        logs = self.options.data_dir.resolve() / "logs"
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        logs.chmod(0o700)  # only its owner lists what is logged
        py = sys.executable
        host = self.options.host
        plan = [
            Child(name, [py, "-m", f"services.{name}"], self._env(name), logs / f"{name}.log",
                  f"http://{host}:{self.options.metrics_base_port + i}/metrics")
            for i, name in enumerate(("ingest", "cycles", "analysis", "alerts"))
        ]  # fmt: skip
        plan.append(
            Child("gateway", [py, "-m", "services.gateway"], self._env("gateway"),
                  logs / "gateway.log",
                  f"http://{host}:{self.options.gateway_port}/")
        )  # fmt: skip
        if self.options.simulate:
            plan.append(
                Child(
                    "simulator",
                    [py, "-m", "services.cli", "edge", "simulate", *self.options.sim_args],
                    self._env(edge_user("sim-01")),
                    logs / "simulator.log",
                    "stream sim-01",
                )
            )
        return plan

    async def _prepare(self, kept_token: str | None) -> tuple[str, bool]:
        await migrate(self.pg.url)
        common = CommonSettings(
            nats_url=self._bus_url(ADMIN), database_url=self.pg.url, site=self.options.site
        )
        pool = await open_pool(self.pg.url, retry=True, name="vertac-run")
        try:
            token = await ensure_admin_token(pool, kept_token)
        finally:
            await pool.close()
        bus = await open_bus(common, "vertac-run")
        await init_bus(bus.js, common)
        samples = dict(self.options.site_samples)
        for site in self.options.sites:  # central: a stream of each site's data, sourced
            await link_site(bus.js, SiteLink(site, samples=samples.get(site, "full")))
        if self.options.simulate:
            # the simulated machine has a digital cycle_active input: cycles start and stop on it
            kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
            demo = CycleConfig(
                trigger="signal", signal_sensor="cycle_active", start_above=0.5, stop_below=0.5
            )
            with contextlib.suppress(KeyWrongLastSequenceError):
                await kv.create("sim-01", demo.model_dump_json().encode())
        await bus.close()
        return token

    def start_nats(self) -> None:
        """nats-server with its users (and, in a federation, its leaf nodes)."""
        o = self.options
        self.bus_users.ensure(edge_user("sim-01"), sites=o.sites)
        self.nats.start()
        say(
            f"  nats-server   {self.nats.url}  (monitor http://{self.nats.host}:{self.nats.monitor_port})"
        )
        if o.site:
            toward = f", leaf node of {redact_text(o.central_url)}" if o.central_url else ""
            say(f"  site          {o.site} (JetStream domain){toward}")
        for site in o.sites:
            say(f"  site {site:<8} takes leaf nodes on {o.host}:{o.leaf_port} as "
                f"{leaf_user(site)} (password in {self.leaf_users.secrets_file})")  # fmt: skip

    def start(self) -> None:
        logs = self.options.data_dir.resolve() / "logs"
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        logs.chmod(0o700)  # only its owner lists what is logged
        _STACK_LOG[:] = [logs / "stack.log"]
        say(f"VerTac: data in {self.options.data_dir.resolve()}")
        self.start_nats()
        self.pg.start()
        shown = self.pg.url.replace(self.pg.url.split("@")[0].rsplit(":", 1)[-1] + "@", "***@")
        say(f"  PostgreSQL    {shown}  (passwords in {self.pg.secrets_file}, mode 600)")
        token_file = self.options.data_dir.resolve() / "admin.token"
        kept = token_file.read_text() if token_file.is_file() else None
        token, new = asyncio.run(self._prepare(kept))
        if new:
            write_secret(token_file, token + "\n")
        say("  migrations applied, JetStream streams and buckets declared")
        self.children = self._plan()
        for child in self.children:
            child.start()
        wait_for_port(self.options.host, self.options.gateway_port, 60, None)
        for child in self.children:
            say(f"  {child.name:<13} pid {child.proc.pid if child.proc else '-':<7} {child.url}  "
                f"log {child.log_path}")  # fmt: skip
        url = f"http://{self.options.host}:{self.options.gateway_port}/"
        if CommonSettings().auth == "off":
            say(f"\nOpen {url} for the live view; Ctrl-C stops everything.")
            say("  WARNING: VERTAC_AUTH=off: anyone who reaches the gateway is admin.")
        elif new:
            say(f"\nSign in (this link is shown once): {url}#token={token}")
            say(f"  the admin token is kept for scripts in {token_file} (mode 600)")
            say("  Ctrl-C stops everything.")
        else:
            say(f"\nOpen {url} and sign in with the admin token in {token_file};")
            say("  Ctrl-C stops everything.")

    def supervise(self, stop: list[bool]) -> None:
        """Until ``stop[0]`` turns true: restart a dead nats-server or PostgreSQL at once, and a
        dead service after its own backoff (1, 2, 4 ... 30 s, back to 1 s once it ran healthily
        for ``HEALTHY_S``), each independently of the others."""
        last_server_check = 0.0
        while not stop[0]:
            now = time.monotonic()
            if now - last_server_check >= 1.0:
                last_server_check = now
                self._watch_servers()
            for child in self.children:
                if not stop[0]:
                    self._watch(child, time.monotonic())
            time.sleep(0.2)

    def _watch_servers(self) -> None:
        if self.nats.proc is not None and self.nats.proc.poll() is not None:
            code = self.nats.proc.returncode  # poll() reaped it: no zombie is left
            say(f"  nats-server exited with {code}; restarting it")
            try:
                self.nats.start()
                say(f"  nats-server restarted at {self.nats.url}")
            except EmbeddedServerError as exc:
                say(f"  nats-server did not restart: {exc}; trying again")
        if not self.pg.alive():
            say("  PostgreSQL is not running; restarting it")
            try:
                self.pg.start()
                say(f"  PostgreSQL restarted on port {self.pg.port}")
            except EmbeddedServerError as exc:
                say(f"  PostgreSQL did not restart: {exc}; trying again")

    def _watch(self, child: Child, now: float) -> None:
        if child.proc is None:
            return
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                child.start()
            return
        code = child.proc.poll()
        if code is None:
            return
        if child.name == "simulator" and code == 0:
            return  # a simulator given --frames or --duration ends by itself
        if now - child.started_at >= HEALTHY_S:
            child.restarts = 0
        delay = min(30.0, 2.0 ** min(child.restarts, 5))
        say(f"  {child.name} exited with {code}; restarting in {delay:.0f} s "
            f"(see {child.log_path})")  # fmt: skip
        if child.log_file is not None:
            child.log_file.close()
        child.restart_at = now + delay

    def stop(self) -> None:
        say("\nstopping ...")
        for child in reversed(self.children):
            child.stop()
        self.pg.stop()
        self.nats.stop()
        say("stopped; data kept in " + str(self.options.data_dir.resolve()))


_STACK_LOG: list[Path] = []


def say(text: str) -> None:
    """One line for the person at the terminal, also kept in ``logs/stack.log``."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    for path in _STACK_LOG:  # the file never keeps a credential the terminal showed once
        with contextlib.suppress(OSError), private_file(path) as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {redact_text(text.strip())}\n")


def run_stack(options: StackOptions) -> int:
    """Run until Ctrl-C or SIGTERM; returns the exit code."""
    stack = Stack(options)
    stop = [False]

    def on_signal(signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        stack.supervise(stop)
    except (EmbeddedServerError, OSError) as exc:
        say(f"vertac run: {exc}")
        return 2
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
    return 0
