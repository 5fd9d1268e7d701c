"""Services as real processes: crash and restart, unreachable servers, the whole `vertac run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import numpy as np
import pytest

from edge.publisher import FramePublisher
from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas.frames import Frame, Series
from services.common.config import CommonSettings
from services.common.db import migrate
from services.embedded import NatsServer, free_port, free_ports
from tests.conftest import (
    REPO,
    ClosedBus,
    bus_url,
    eventually,
    refusals,
    start_on_free_ports,
)
from tests.helpers import frame_count, stats, stored_frames

pytestmark = pytest.mark.e2e


def service_env(common: CommonSettings, nats_url: str = "", **extra: str) -> dict[str, str]:
    """The environment of a service process (``nats_url``: its own bus user's)."""
    env = dict(os.environ)
    env.update(
        VERTAC_NATS_URL=nats_url or common.nats_url,
        VERTAC_DATABASE_URL=common.database_url,
        VERTAC_INGEST_METRICS_PORT="0",
        VERTAC_LOG_JSON="true",
        **extra,
    )
    return env


def start_service(name: str, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """The service as a process, its log appended to ``<logs>/<name>.log`` (a pipe nobody
    reads would stop it once full)."""
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def still_running(proc: subprocess.Popen[bytes], name: str, logs: Path) -> None:
    """Fail at once, with the service's last log lines, when it exited."""
    if proc.poll() is not None:
        tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")


async def test_ingest_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    bus, common: CommonSettings, nats_server: NatsServer, stream_id: str, tmp_path: Path
) -> None:
    env = service_env(common, bus_url(nats_server, "ingest"))
    ingest = start_service("ingest", env, tmp_path)
    sent: list[Frame] = []
    model = build_machine(stream_id=stream_id, sensors=16, rate_hz=1000)
    publishing = asyncio.ensure_future(
        simulate(bus, model, SimulateOptions(speed=20, frames=600), on_frame=sent.append)
    )
    try:

        async def some_stored() -> bool:
            still_running(ingest, "ingest", tmp_path)
            return await frame_count(common.database_url, stream_id) > 50

        await eventually(some_stored)
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(10)
        at_kill = await frame_count(common.database_url, stream_id)
        await asyncio.sleep(1.0)  # frames keep arriving on the bus while ingest is down
        ingest = start_service("ingest", env, tmp_path)
        await publishing

        async def all_stored() -> bool:
            return await frame_count(common.database_url, stream_id) == 600

        await eventually(all_stored, timeout=60)
    finally:
        ingest.terminate()
        ingest.wait(10)
    assert 0 < at_kill < 600
    stored = await stored_frames(common.database_url, stream_id)
    assert [f.seq for f in stored] == [f.seq for f in sent]
    assert all(a.equals(b) for a, b in zip(stored, sent, strict=True))
    assert await stats(common.database_url, stream_id) == (600, sum(f.n_samples for f in sent))


@pytest.mark.parametrize("service", ["ingest", "cycles", "analysis", "alerts", "gateway"])
def test_a_service_exits_with_one_clear_line_when_nats_is_unreachable(service: str) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    env = {**os.environ, "VERTAC_NATS_URL": dead, "VERTAC_STARTUP_RETRY": "false"}
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vertac {service}: NATS at {dead} is unreachable")
    assert "Traceback" not in result.stderr


def test_ingest_exits_with_one_clear_line_when_postgresql_is_unreachable(
    nats_server: NatsServer,
) -> None:
    env = {
        **os.environ,
        "VERTAC_NATS_URL": bus_url(nats_server, "ingest"),
        "VERTAC_DATABASE_URL": f"postgresql://vertac@127.0.0.1:{free_port()}/vertac",
        "VERTAC_INGEST_METRICS_PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.ingest"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("vertac ingest: PostgreSQL at")
    assert "Traceback" not in result.stderr


async def test_with_startup_retry_a_service_waits_for_the_bus(
    tmp_path: Path, database_url: str, stream_id: str
) -> None:
    port = free_port()
    common = CommonSettings(nats_url=f"nats://127.0.0.1:{port}", database_url=database_url)
    ingest = start_service("ingest", service_env(common, VERTAC_STARTUP_RETRY="true"), tmp_path)
    try:
        await asyncio.sleep(2)
        assert ingest.poll() is None, "ingest gave up instead of retrying"
        server = NatsServer(tmp_path / "late-nats", port=port, monitor_port=free_port()).start()
        try:
            from services.common.runtime import open_bus

            bus = await open_bus(common, "test")
            model = build_machine(stream_id=stream_id, sensors=2)
            await simulate(bus, model, SimulateOptions(speed=0, frames=5))
            await bus.close()

            async def stored() -> bool:
                return await frame_count(database_url, stream_id) == 5

            await eventually(stored, timeout=40)
        finally:
            server.stop()
    finally:
        ingest.terminate()
        ingest.wait(10)


@pytest.mark.parametrize("service", ["ingest", "cycles"])
def test_a_service_waiting_for_its_servers_stops_at_once_on_sigterm(
    tmp_path: Path, service: str
) -> None:
    """An init system stopping a service whose bus never came must not wait out the backoff
    and kill it: SIGTERM ends the wait, exit 0, a log line saying so."""
    common = CommonSettings(
        nats_url=f"nats://127.0.0.1:{free_port()}",
        database_url=f"postgresql://vertac:x@127.0.0.1:{free_port()}/vertac",
    )
    proc = start_service(service, service_env(common, VERTAC_STARTUP_RETRY="true"), tmp_path)
    try:
        log = tmp_path / f"{service}.log"
        _wait(lambda: log.is_file() and log.read_text().count("retrying") >= 3, timeout=60)
        assert proc.poll() is None, "it gave up instead of retrying"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped while waiting for its servers" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, headers=headers)
    except httpx.HTTPError:
        return None


def _wait(check, timeout: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_vertac_run_brings_up_the_whole_system_and_keeps_data_across_runs(tmp_path: Path) -> None:
    ports = {"port": free_port(), "nats": free_port(), "pg": free_port(), "metrics": free_ports(4)}
    data = tmp_path / "data"
    args = [
        sys.executable, "-m", "services.cli", "run", "--data-dir", str(data),
        "--port", str(ports["port"]), "--nats-port", str(ports["nats"]),
        "--nats-monitor-port", str(free_port()),
        "--pg-port", str(ports["pg"]), "--metrics-base-port", str(ports["metrics"]),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{ports['port']}"
    seen = []
    token_file = data / "admin.token"

    def token() -> str | None:
        return token_file.read_text().strip() if token_file.is_file() else None

    for _ in range(2):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            admin = {"Authorization": f"Bearer {_wait(token)}"}
            assert token_file.stat().st_mode & 0o777 == 0o600

            def persisted(admin: dict[str, str] = admin) -> int | None:
                r = _get(f"{base}/api/live/stream/sim-01/status", admin)
                if r is None or r.status_code != 200:
                    return None
                n = r.json()["samples_persisted"]
                return n if n > (seen[-1] if seen else 0) else None

            seen.append(_wait(persisted))
            health = _get(f"{base}/api/health")
            assert health is not None and health.json()["status"] == "ok"
            anonymous = _get(f"{base}/api/live/stream/sim-01/status")
            assert anonymous is not None and anonymous.status_code == 401
            metrics = _get(f"http://127.0.0.1:{ports['metrics']}/metrics")
            assert metrics is not None and "vertac_samples_persisted_total" in metrics.text
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        text = out.decode()
        assert proc.returncode == 0, text
        for name in ("nats-server", "PostgreSQL", "ingest", "cycles", "analysis", "alerts",
                     "gateway", "simulator"):  # fmt: skip
            assert name in text
        assert "stopped; data kept" in text
        signed_in = f"{base}/#token={token()}"
        # the sign-in link is printed on the first start only; the token stays the same
        assert (signed_in in text) == (len(seen) == 1), text
    assert seen[1] > seen[0]  # the second run continued on the first run's data
    # the terminal showed the sign-in link once; no log file keeps a credential
    secret = token()
    assert secret
    assert (data / "logs").stat().st_mode & 0o777 == 0o700
    for log_file in (data / "logs").iterdir():
        assert secret not in log_file.read_text(errors="replace"), log_file
        assert log_file.stat().st_mode & 0o777 == 0o600, log_file
    cycles_log = (data / "logs" / "cycles.log").read_text()
    assert '"durable": "cycles-control-p' in cycles_log
    leftovers = subprocess.run(
        ["pgrep", "-f", str(data)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", "processes left running after Ctrl-C"
    # each service worked within its own bus permissions
    assert refusals(data / "nats" / "nats-server.log") == []


async def test_alerts_killed_and_restarted_neither_duplicates_nor_loses_an_alert(
    bus, common: CommonSettings, nats_server: NatsServer, stream_id: str, tmp_path: Path
) -> None:
    import numpy as np
    import psycopg

    from edge.publisher import FramePublisher
    from schemas import subjects
    from schemas.frames import Frame, Series
    from schemas.messages import AlertRule

    kv = await bus.js.key_value(subjects.KV_ALERT_RULES)
    rule = AlertRule(rule_id="hot", stream_id=stream_id, kind="limit", sensor_id="t", hi=50)
    await kv.put(f"{stream_id}.hot", rule.model_dump_json().encode())
    env = service_env(common, bus_url(nats_server, "alerts"), VERTAC_ALERTS_METRICS_PORT="0")
    alerts = start_service("alerts", env, tmp_path)
    publisher = FramePublisher(bus.js)

    async def send(seq: int, values: list[float]) -> None:
        t0 = 1_800_000_000_000_000_000 + seq * 1_000_000_000
        await publisher.publish(
            Frame(stream_id, seq, (Series("t", np.asarray(values), t0, 100_000_000),))
        )
        await publisher.flush()

    async def history() -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(common.database_url) as conn:
            cur = await conn.execute(
                "SELECT h.alert_id, h.state FROM live_alert_history h"
                " JOIN live_alerts a USING (alert_id) WHERE a.stream_id = %s ORDER BY h.at",
                (stream_id,),
            )
            return await cur.fetchall()

    try:
        await send(0, [20, 60, 70])

        async def raised() -> list | None:
            still_running(alerts, "alerts", tmp_path)
            rows = await history()
            return rows if rows else None

        # a fresh process: imports, connections, its consumers, on a busy box
        await eventually(raised, timeout=60)
        alerts.send_signal(signal.SIGKILL)
        alerts.wait(10)
        await send(1, [80, 40, 30])  # clears while the service is down
        await send(2, [20, 20])
        alerts = start_service("alerts", env, tmp_path)

        async def cleared() -> list | None:
            still_running(alerts, "alerts", tmp_path)
            rows = await history()
            return rows if len(rows) >= 2 else None

        rows = await eventually(cleared, timeout=60)
        await asyncio.sleep(1.0)
    finally:
        alerts.terminate()
        alerts.wait(10)
    rows = await history()
    assert [state for _, state in rows] == ["raised", "cleared"]
    assert len({alert_id for alert_id, _ in rows}) == 1


@dataclass
class SiteAndCentral:
    """A site (its nats-server, open) and a central (closed bus, with its stream of the site)."""

    central: NatsServer
    site: NatsServer
    closed: ClosedBus
    database: str  # central's

    def central_env(self, service: str) -> dict[str, str]:
        """The environment of one of central's services, as its own bus user."""
        return service_env(CommonSettings(database_url=self.database),
                           self.closed.service_url(self.central.url, service),
                           VERTAC_SITES="north")  # fmt: skip


@contextlib.asynccontextmanager
async def site_and_central(tmp_path: Path, pg_cluster) -> AsyncIterator[SiteAndCentral]:  # type: ignore[no-untyped-def]
    """Site ``north`` a leaf node of a central on this machine, the site's layout declared."""
    from services.common.bus import init_bus
    from services.federation import CENTRAL_DOMAIN, site_leaf_remote

    closed = ClosedBus(tmp_path / "bus", sites=("north",))
    central = start_on_free_ports(lambda: NatsServer(
        tmp_path / "central", port=free_port(), monitor_port=free_port(),
        config=closed.users.config_file, domain=CENTRAL_DOMAIN, leaf_port=free_port(),
    ))  # fmt: skip
    site = None
    try:
        closed.declare(central.url)  # central's layout and its stream of site north
        assert central.leaf_port
        remote = site_leaf_remote(
            closed.users.leaf_users.url("north", "127.0.0.1", central.leaf_port)
        )
        site = start_on_free_ports(lambda: NatsServer(
            tmp_path / "north", port=free_port(), monitor_port=free_port(), domain="north",
            leaf_remotes=(remote,),
        ))  # fmt: skip
        snc = await nats.connect(site.url)
        await init_bus(snc.jetstream(), CommonSettings(nats_url=site.url, site="north"))
        await snc.close()
        database = pg_cluster.new_database()
        await migrate(database)
        yield SiteAndCentral(central, site, closed, database)
    finally:
        if site is not None:
            site.stop()
        central.stop()


def recent_frames(stream_id: str, total: int, sensors: int = 1) -> list[Frame]:
    """``total`` frames of 100 samples per sensor, 100 ms each, ending now (within retention)."""
    t0 = time.time_ns() - total * 10**8
    rng = np.random.default_rng(7)
    return [
        Frame(stream_id, seq, tuple(
            Series(f"s{k}", rng.normal(size=100) + seq, t0 + seq * 10**8, 10**6)
            for k in range(sensors)
        ))
        for seq in range(total)
    ]  # fmt: skip


async def test_central_ingest_killed_while_it_takes_a_sites_frames_stores_each_once(
    tmp_path: Path, pg_cluster, stream_id: str
) -> None:  # type: ignore[no-untyped-def]
    """At a central VerTac, ingest takes a site's frames from ``VERTAC_SITE_<site>`` with a
    durable consumer of its own; killed -9 in the middle and started again, it has stored each
    of the site's frames once, as the site sent it, under ``<site>.<stream id>``."""
    total = 3000
    sent = recent_frames(stream_id, total)
    at_central = f"north.{stream_id}"
    async with site_and_central(tmp_path, pg_cluster) as fed:
        snc = await nats.connect(fed.site.url)
        publisher = FramePublisher(snc.jetstream())
        env = fed.central_env("ingest")

        async def publish() -> None:  # the site's machine runs on meanwhile
            for i in range(0, total, 100):
                for frame in sent[i : i + 100]:
                    await publisher.publish(frame)
                await publisher.flush()
                await asyncio.sleep(0.05)

        publishing = asyncio.ensure_future(publish())
        ingest = start_service("ingest", env, tmp_path)
        try:

            async def some_stored() -> bool:
                still_running(ingest, "ingest", tmp_path)
                return await frame_count(fed.database, at_central) > 50

            await eventually(some_stored, timeout=60)
            ingest.send_signal(signal.SIGKILL)
            ingest.wait(10)
            at_kill = await frame_count(fed.database, at_central)
            ingest = start_service("ingest", env, tmp_path)
            await publishing

            async def all_stored() -> bool:
                still_running(ingest, "ingest", tmp_path)
                return await frame_count(fed.database, at_central) == total

            await eventually(all_stored, timeout=120)
        finally:
            ingest.terminate()
            ingest.wait(10)
            await snc.close()
        assert 0 < at_kill < total
        stored = await stored_frames(fed.database, at_central)
        assert [f.seq for f in stored] == list(range(total))
        assert all(
            np.array_equal(a.series[0].values, b.series[0].values)
            for a, b in zip(stored, sent, strict=True)
        )
        assert await stats(fed.database, at_central) == (total, total * 100)


async def test_central_takes_a_sites_digest_instead_of_its_samples(
    tmp_path: Path, pg_cluster, stream_id: str
) -> None:  # type: ignore[no-untyped-def]
    """``vertac central --site-samples north=digest``: the site's ingest stores every frame
    and publishes each one's digest; central takes the digests in place of the samples and
    stores them as the site's frames: every frame once, each sensor's lowest and highest
    sample in the order they came, with their times."""
    from services.federation import SiteLink, link_site
    from services.ingest.logic import digest

    total, sensors = 200, 4
    sent = recent_frames(stream_id, total, sensors)
    at_central = f"north.{stream_id}"
    async with site_and_central(tmp_path, pg_cluster) as fed:
        admin = await nats.connect(fed.closed.admin_url(fed.central.url))
        changed = await link_site(admin.jetstream(), SiteLink("north", samples="digest"))
        await admin.close()
        assert changed == "updated"
        site_db = pg_cluster.new_database()
        await migrate(site_db)
        site_env = service_env(CommonSettings(database_url=site_db), fed.site.url,
                               VERTAC_SITE="north")  # fmt: skip
        procs = [start_service("ingest", site_env, tmp_path),
                 start_service("ingest", fed.central_env("ingest"), tmp_path)]  # fmt: skip
        snc = await nats.connect(fed.site.url)
        try:
            publisher = FramePublisher(snc.jetstream())
            for frame in sent:
                await publisher.publish(frame)
            await publisher.flush()

            async def all_stored() -> bool:
                for proc in procs:
                    still_running(proc, "ingest", tmp_path)
                return (await frame_count(site_db, stream_id),
                        await frame_count(fed.database, at_central)) == (total, total)  # fmt: skip

            await eventually(all_stored, timeout=120)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            await snc.close()
        at_site = await stored_frames(site_db, stream_id)
        assert all(a.equals(b) for a, b in zip(at_site, sent, strict=True))  # whole at the site
        taken = await stored_frames(fed.database, at_central)
        assert [f.seq for f in taken] == list(range(total))
        for got, frame in zip(taken, sent, strict=True):
            want = digest(frame)
            for g, w, whole in zip(got.series, want.series, frame.series, strict=True):
                assert np.array_equal(g.values, w.values) and 1 <= g.n <= 2
                assert np.array_equal(g.timestamps(), w.timestamps())
                assert g.values.min() == whole.values.min()
                assert g.values.max() == whole.values.max()
        samples = await stats(fed.database, at_central)
        assert samples is not None and samples[1] <= total * sensors * 2
