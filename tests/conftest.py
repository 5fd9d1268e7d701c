"""Fixtures that start real servers: nats-server (JetStream) and PostgreSQL from their PyPI wheels,
VictoriaMetrics from Debian's package for the InfluxDB line-protocol path.

Servers named by environment variables are used instead when set:
``VERTAC_TEST_NATS_URL`` (an otherwise idle server) and ``VERTAC_TEST_PG_ADMIN_URL`` (a superuser URL;
every test gets its own database), ``VERTAC_TEST_VICTORIA_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nats
import psycopg
import pytest
import uvicorn

from edge.client import Bus, inbox_prefix
from schemas import subjects
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import migrate
from services.common.runtime import open_bus
from services.embedded import (
    EmbeddedServerError,
    NatsServer,
    Postgres,
    free_port,
    wait_for_port,
)
from services.federation import SiteLink, link_site
from services.natsauth import ADMIN, SERVICES, BusUsers, url_for

REPO = Path(__file__).resolve().parents[1]

# A nats-server sizes JetStream storage from the disk's free space when it starts (75 % of it), and
# the default stream limits reserve 10 GiB of samples and 1 GiB per event stream. Tests store
# megabytes: smaller limits keep them from being refused on a nearly full disk. Servers and
# services started by tests inherit these; a test of the defaults removes them.
os.environ.setdefault("VERTAC_SAMPLES_MAX_BYTES", str(512 * 2**20))
os.environ.setdefault("VERTAC_EVENTS_MAX_BYTES", str(64 * 2**20))
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class PgCluster:
    admin_url: str
    server: Postgres | None

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        if self.server is not None:
            return self.server.create_database(name)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = name
        return psycopg.conninfo.make_conninfo(**info)

    def restart(self) -> None:
        assert self.server is not None, "restart needs the embedded server"
        self.server.stop()
        self.server.start()


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    url = os.environ.get("VERTAC_TEST_PG_ADMIN_URL")
    if url:
        yield PgCluster(url, None)
        return
    server = Postgres(tmp_path_factory.mktemp("pg") / "data", port=free_port()).start()
    try:
        yield PgCluster(server.admin_url(), server)
    finally:
        server.stop()


# connection names of the services (``vertac-<service>``) and the bus user each connects as
_SERVICE_USERS = {f"vertac-{s}": s for s in SERVICES} | {"vertac-gateway-preflight": "gateway"}


class ClosedBus:
    """The bus of a test is closed as ``vertac run``'s is: every connection needs a user, and
    each service connects as its own (found by its connection name), with only that user's
    permissions; test clients, the CLI and edges connect as ``admin``. At teardown the test
    fails if the server refused anything (a grant a service lacks shows up here)."""

    def __init__(self, root: Path, sites: tuple[str, ...] = ()) -> None:
        self.users = BusUsers(root / "nats.secrets", root / "nats.users.conf")
        self.passwords = self.users.ensure(sites=sites)  # central's services read its sites'
        self.sites = sites

    def admin_url(self, url: str) -> str:
        return url_for(url, ADMIN, self.passwords[ADMIN])

    def service_url(self, url: str, service: str) -> str:
        return url_for(url, service, self.passwords[service])

    def declare(self, url: str) -> None:
        async def init() -> None:
            nc = await nats.connect(self.admin_url(url), name="vertac-test-layout")
            try:
                js = nc.jetstream(timeout=10)
                await init_bus(js, CommonSettings(nats_url=url))
                for site in self.sites:  # what vertac central declares at start
                    await link_site(js, SiteLink(site))
            finally:
                await nc.close()

        # on a thread of its own: the test's event loop is not touched
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, init()).result()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = nats.connect

        async def connect(*args: object, **kwargs: object) -> object:
            user = _SERVICE_USERS.get(str(kwargs.get("name") or ""))
            servers = kwargs.get("servers")
            if user is not None and isinstance(servers, list):
                kwargs["servers"] = [re.sub(r"://[^@/]*@", "://", str(u)) for u in servers]
                kwargs["user"], kwargs["password"] = user, self.passwords[user]
                kwargs["inbox_prefix"] = inbox_prefix(user)
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(nats, "connect", connect)


def refusals(log_file: Path) -> list[str]:
    """The permission violations nats-server logged."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "Violation" in line]


@pytest.fixture
def nats_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer | str]:
    """A fresh nats-server with JetStream for each test (or the one named by the environment),
    closed as in production (:class:`ClosedBus`)."""
    url = os.environ.get("VERTAC_TEST_NATS_URL")
    if url:
        yield url
        return
    closed = ClosedBus(tmp_path / "bus")
    if os.environ.get("VERTAC_TEST_NATS_TRACE"):  # every subject each client used, in the log
        with closed.users.config_file.open("a") as f:
            f.write("trace: true\nmax_traced_msg_len: 1\n")
    server = start_on_free_ports(lambda: NatsServer(
        tmp_path / "nats", port=free_port(), monitor_port=free_port(),
        config=closed.users.config_file,
    ))  # fmt: skip
    server.closed = closed  # type: ignore[attr-defined]
    closed.install(monkeypatch)
    # as in production, the admin declares the layout (vertac bus init): services may not
    closed.declare(server.url)
    try:
        yield server
    finally:
        server.stop()
    refused = refusals(server.store_dir / "nats-server.log")
    assert not refused, "the bus refused a service something:\n" + "\n".join(refused[:20])


def start_on_free_ports(make: Callable[[], NatsServer], attempts: int = 5) -> NatsServer:
    """Start the server ``make`` returns, on other free ports when the ones it was given were
    taken between their choice and its start (an outgoing connection may get the same port
    from the kernel meanwhile); any other failure is raised at once."""
    for attempt in range(attempts):
        server = make()
        try:
            return server.start()
        except EmbeddedServerError:
            log = server.store_dir / "nats-server.log"
            text = log.read_text(errors="replace") if log.is_file() else ""
            if attempt == attempts - 1 or "address already in use" not in text:
                raise
            log.unlink()
    raise AssertionError("unreachable")


def bus_url(nats_server: NatsServer | str, service: str = ADMIN) -> str:
    """The URL of the test's bus for ``service`` (admin by default), credentials included."""
    if isinstance(nats_server, str):
        return nats_server
    closed: ClosedBus = nats_server.closed  # type: ignore[attr-defined]
    if service == ADMIN:
        return closed.admin_url(nats_server.url)
    return closed.service_url(nats_server.url, service)


@pytest.fixture
async def database_url(pg_cluster: PgCluster) -> str:
    url = pg_cluster.new_database()
    await migrate(url)
    return url


@pytest.fixture
def common(nats_server: NatsServer | str, database_url: str) -> CommonSettings:
    return CommonSettings(nats_url=bus_url(nats_server), database_url=database_url, max_deliver=3)


@pytest.fixture
async def bus(common: CommonSettings) -> AsyncIterator[Bus]:
    b = await open_bus(common, "vertac-test")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def stream_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


class Running:
    """Services running as tasks in the test's event loop, stopped at teardown."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.append(task)
        return task

    def failures(self) -> list[BaseException]:
        return [
            t.exception()  # type: ignore[misc]
            for t in self.tasks
            if t.done() and not t.cancelled() and t.exception() is not None
        ]

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 15)
        for task in self.tasks:
            task.cancel()
        failed = self.failures()
        if failed:
            raise AssertionError(
                f"a service running in the test failed: {failed[0]!r}"
            ) from failed[0]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    try:
        yield r
    finally:
        await r.close()


class GatewayUrl(str):
    """A gateway's base URL, with the admin token the fixture made for it."""

    token: str
    headers: dict[str, str]


async def admin_token(database_url: str, name: str = "test-admin", role: str = "admin",
                      streams: list[str] | None = None) -> str:  # fmt: skip
    """A new API token made directly in the database, as ``vertac auth token create`` does."""
    from services.common.auth import TokenStore
    from services.common.db import open_pool

    pool = await open_pool(database_url, retry=False, name="test")
    try:
        token, _ = await TokenStore(pool).create(name, role, streams)
    finally:
        await pool.close()
    return token


def gateway_url(base: str, token: str) -> GatewayUrl:
    url = GatewayUrl(base)
    url.token = token
    url.headers = {"Authorization": f"Bearer {token}"}
    return url


@contextlib.asynccontextmanager
async def serve_gateway(common: CommonSettings, **settings: object) -> AsyncIterator[str]:
    """A gateway served by uvicorn on a free port in this event loop; yields its base URL."""
    from services.gateway.app import build_app, uvicorn_config
    from services.gateway.config import Settings

    port = free_port()
    config = uvicorn_config(
        build_app(Settings(port=port, **settings), common),
        host="127.0.0.1",
        port=port,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    async with registry_service(common), settings_owners(common), _served(server) as base:
        yield base


@contextlib.asynccontextmanager
async def _served(server: uvicorn.Server) -> AsyncIterator[str]:
    port = server.config.port
    task = asyncio.ensure_future(server.serve())
    for _ in range(600):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    assert server.started, "gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def registry_service(common: CommonSettings) -> AsyncIterator[None]:
    """The stream registry of the ingest service (it answers registrations and frame number
    reservations, which the gateway's REST routes ask it for), while the block runs."""
    from services.ingest.registry import RegistryResponder

    bus = await open_bus(common, "vertac-ingest")
    registry = RegistryResponder(
        bus.js,
        await bus.js.key_value(subjects.KV_STREAMS),
        await bus.js.key_value(subjects.KV_SEQ),
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(registry.serve(bus.nc, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await bus.close()


@contextlib.asynccontextmanager
async def settings_owners(common: CommonSettings) -> AsyncIterator[None]:
    """What the cycles and alerts services answer for operators' settings, while the block
    runs: cycle configuration (``vertac.cyclectl``) and alert operations (``vertac.alertctl``),
    with the services' own handlers, for tests that do not run those services."""
    from edge.registry_client import lookup
    from services.alerts.adapters import Alerts, Rules, RuleStates
    from services.alerts.handlers import AlertEngine
    from services.common.db import open_pool
    from services.common.responder import respond
    from services.cycles.adapters import ConfigStore
    from services.cycles.control import CycleControl

    bus = await open_bus(common, "vertac-owners")
    pool = await open_pool(common.database_url, retry=False, name="test-owners")
    streams = await bus.js.key_value(subjects.KV_STREAMS)
    control = CycleControl(
        ConfigStore(await bus.js.key_value(subjects.KV_CYCLE_CONFIG)),
        lambda stream_id: lookup(streams, stream_id),
    )
    engine = AlertEngine(
        Rules(bus.nc, await bus.js.key_value(subjects.KV_ALERT_RULES)),
        RuleStates(await bus.js.key_value(subjects.KV_ALERT_STATE)),
        Alerts(bus.js, pool),
        reraise_window_s=300.0,
    )
    await respond(bus.nc, subjects.cycle_requests(), "cycles", control.handle, "cycle")
    await respond(bus.nc, subjects.alert_requests(), "alerts", engine.control, "alert")
    try:
        yield
    finally:
        await bus.close()
        await pool.close()


@pytest.fixture
async def registry(common: CommonSettings) -> AsyncIterator[None]:
    """The stream registry, for a test that serves a gateway of its own."""
    async with registry_service(common):
        yield


@contextlib.asynccontextmanager
async def cycles_service(common: CommonSettings) -> AsyncIterator[None]:
    """The cycles service while the block runs: it carries out dataset changes and imports
    for the gateway. Stopped at the end, so that its consumers stay as they are."""
    from services.cycles.app import serve
    from services.cycles.config import Settings

    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(Settings(metrics_port=0), common, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def gateway(common: CommonSettings) -> AsyncIterator[GatewayUrl]:
    """The gateway served by uvicorn on a free port, at default settings (auth on); yields its
    base URL with an admin token (``gateway.headers``)."""
    token = await admin_token(common.database_url)
    async with serve_gateway(common, ws_interval_ms=50) as base:
        yield gateway_url(base, token)


@dataclass
class Victoria:
    url: str


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victoria]:
    url = os.environ.get("VERTAC_TEST_VICTORIA_URL")
    if url:
        yield Victoria(url)
        return
    binary = shutil.which("victoria-metrics") or (
        "/usr/bin/victoria-metrics" if Path("/usr/bin/victoria-metrics").exists() else None
    )
    if binary is None:
        reason = "victoria-metrics is not installed (apt-get install victoria-metrics)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    data = tmp_path_factory.mktemp("victoria")
    proc = subprocess.Popen(
        [binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
         "-search.latencyOffset=0s", "-loggerLevel=WARN"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port, 30, None)
        yield Victoria(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)


async def eventually(check, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Await ``check()`` until it returns a truthy value; returns that value or fails."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A mosquitto broker on a free port (Debian's package)."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        reason = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port("127.0.0.1", port, 20, None)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
