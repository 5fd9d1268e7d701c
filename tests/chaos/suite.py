"""Fault injection on a running system: each fault in a fresh embedded stack under steady load.

A simulated machine (cycles on its ``cycle_active`` input) publishes through the project's own
publisher while ingest and cycles run as processes; one fault is injected per row: kill -9 of a
service, of nats-server or of PostgreSQL, a long PostgreSQL outage, two replicas of every service
with one killed, and a 3-node JetStream cluster (R3) whose stream leader is killed and restarted.
Each row counts frames published (acknowledged by JetStream), persisted, lost and duplicated, and
cycles right, aborted, duplicated and missing against the cycles the published signal holds.

``python -m tests.chaos`` prints the full table (about 100,000 samples/s, a 15-minute outage;
``--outage-s=N`` shortens it, ``--short`` is the form ``make test`` runs, fault names pick rows);
``tests/e2e/test_chaos.py`` runs the short form and asserts 0 everywhere it must be 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats.errors
import numpy as np
import psycopg

from edge.client import Bus
from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.frames import Frame
from schemas.messages import AlertRule, AnalysisCompleted, CycleConfig
from services.common.config import CommonSettings
from services.common.db import migrate
from services.common.runtime import open_bus
from services.embedded import (
    NatsServer,
    Postgres,
    free_port,
    nats_server_binary,
    wait_for_port,
)
from services.natsauth import ADMIN, BusUsers, url_for
from tests.conftest import refusals

REPO = Path(__file__).resolve().parents[2]
AUTO_REFERENCE_CYCLES = 3  # the analysis service's default
NS = 1_000_000_000
STREAM = "chaos-01"


@dataclass(frozen=True)
class Load:
    """The machine and how long it runs; ``sensors * rate_hz`` samples per second."""

    sensors: int = 10
    rate_hz: float = 10_000.0
    cycle_s: float = 4.0
    seconds: float = 40.0
    outage_s: float = 900.0
    speed: float = 1.0


FULL = Load()
SHORT = Load(sensors=8, rate_hz=1000.0, cycle_s=3.0, seconds=24.0, outage_s=40.0)


@dataclass
class Row:
    fault: str
    published: int = 0
    persisted: int = 0
    lost: int = 0
    duplicated: int = 0
    cycles: int = 0
    right: int = 0
    aborted: int = 0
    dup_cycles: int = 0
    missing: int = 0
    stuck: int = 0  # cycles left running for good
    analyses: int = -1  # analyses of completed cycles (-1: no analysis service in the row)
    dup_analyses: int = 0
    missing_analyses: int = 0
    alerts_raised: int = -1  # raised alert events (-1: no alerts service in the row)
    expected_raises: int = 0
    dup_alerts: int = 0
    catch_up_s: float = 0.0
    samples_per_s: float = 0.0
    notes: str = ""
    died: bool = False
    refused: list[str] = field(default_factory=list)  # what the closed bus refused a service

    def clean(self) -> bool:
        zeros = (self.lost, self.duplicated, self.aborted, self.dup_cycles, self.missing,
                 self.stuck, self.dup_analyses, self.missing_analyses, self.dup_alerts)  # fmt: skip
        raises = self.alerts_raised in (-1, self.expected_raises)
        return not any(zeros) and raises and not self.died and not self.refused


class ClusterNats:
    """Three nats-server processes on loopback forming one JetStream cluster."""

    def __init__(self, root: Path, users: Path) -> None:
        self.root = root
        self.users = users  # the closed bus's users and permissions, as vertac run writes them
        root.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port() for _ in range(3)]
        self.routes = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None, None, None]

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def _conf(self, i: int) -> Path:
        routes = ", ".join(f"nats://127.0.0.1:{r}" for j, r in enumerate(self.routes) if j != i)
        store = self.root / f"n{i}"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.root / f"n{i}.conf"
        conf.write_text(
            f"server_name: n{i}\nlisten: 127.0.0.1:{self.ports[i]}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{ name: vertac, listen: 127.0.0.1:{self.routes[i]}, routes: [{routes}] }}\n"
            f'include "{os.path.relpath(self.users, self.root)}"\n'
        )
        return conf

    def start(self, i: int | None = None) -> None:
        for k in [i] if i is not None else range(3):
            log = (self.root / f"n{k}.log").open("ab")
            self.procs[k] = subprocess.Popen(
                [nats_server_binary(), "-c", str(self._conf(k))], stdout=log, stderr=log
            )
            wait_for_port("127.0.0.1", self.ports[k], 20, self.procs[k])

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)


@dataclass
class System:
    """One embedded stack: the servers and the service processes running against them."""

    root: Path
    common: CommonSettings
    pg: Postgres
    nats: NatsServer | None
    cluster: ClusterNats | None
    passwords: dict[str, str]
    procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    metrics: bool = False  # serve /metrics on the default ports (replicas then move up)

    def bus_url(self, user: str) -> str:
        servers = self.nats.url if self.nats is not None else self.cluster.url  # type: ignore[union-attr]
        return ",".join(url_for(u, user, self.passwords[user]) for u in servers.split(","))

    def refusals(self) -> list[str]:
        logs = [self.root / "nats" / "nats-server.log", *self.root.glob("cluster/n*.log")]
        return [line for log in logs for line in refusals(log)]

    def env(self, service: str) -> dict[str, str]:
        return {
            **os.environ,
            "VERTAC_NATS_URL": self.bus_url(service),
            "VERTAC_DATABASE_URL": self.common.database_url,
            "VERTAC_BUS_REPLICAS": str(self.common.bus_replicas),
            "VERTAC_STARTUP_RETRY": "true",
            "VERTAC_LOG_LEVEL": "WARNING",
            "VERTAC_LOG_JSON": "true",
            **({} if self.metrics else {f"VERTAC_{n}_METRICS_PORT": "0"
                                        for n in ("INGEST", "CYCLES", "ALERTS", "ANALYSIS")}),
            "VERTAC_GATEWAY_PORT": str(free_port()),
        }  # fmt: skip

    def _spawn(self, name: str, index: int) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}-{index}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=self.env(name), cwd=REPO,
            stdout=log, stderr=log,
        )  # fmt: skip

    def start(self, name: str) -> None:
        running = self.procs.setdefault(name, [])
        running.append(self._spawn(name, len(running)))

    def kill(self, name: str, index: int = 0) -> None:
        proc = self.procs[name][index]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, name: str, index: int = 0) -> None:
        self.procs[name][index] = self._spawn(name, index)

    def alive(self) -> list[str]:
        return [f"{n}[{i}]" for n, ps in self.procs.items() for i, p in enumerate(ps)
                if p.poll() is None]  # fmt: skip

    def stop(self) -> None:
        for ps in self.procs.values():
            for p in ps:
                if p.poll() is None:
                    p.terminate()
        for ps in self.procs.values():
            for p in ps:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.pg.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.cluster is not None:
            self.cluster.stop()


def kill_postmaster(pg: Postgres) -> None:
    pid = int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pg.alive() and time.monotonic() < deadline:
        time.sleep(0.1)


Fault = Callable[[System, Bus, Load], Awaitable[str]]


async def _later(seconds: float) -> None:
    await asyncio.sleep(seconds)


def fault_kill_service(name: str, index: int = 0) -> Fault:
    async def fault(system: System, bus: Bus, load: Load) -> str:
        await _later(load.seconds / 3)
        system.kill(name, index)
        await _later(2.0)
        system.restart(name, index)
        return f"{name} killed -9 at {load.seconds / 3:.0f} s, back 2 s later"

    return fault


async def fault_kill_nats(system: System, bus: Bus, load: Load) -> str:
    assert system.nats is not None
    await _later(load.seconds / 3)
    system.nats.kill()
    await _later(2.0)
    await asyncio.to_thread(system.nats.start)
    return "nats-server killed -9, back 2 s later"


async def fault_kill_pg(system: System, bus: Bus, load: Load) -> str:
    await _later(load.seconds / 3)
    await asyncio.to_thread(kill_postmaster, system.pg)
    await _later(2.0)
    await asyncio.to_thread(system.pg.start)
    return "PostgreSQL killed -9, back 2 s later"


async def fault_pg_outage(system: System, bus: Bus, load: Load) -> str:
    await _later(min(5.0, load.seconds / 4))
    await asyncio.to_thread(system.pg.stop)
    await _later(load.outage_s)
    await asyncio.to_thread(system.pg.start)
    return f"PostgreSQL stopped for {load.outage_s:.0f} s"


async def fault_replica_killed(system: System, bus: Bus, load: Load) -> str:
    await _later(load.seconds / 3)
    system.kill("cycles", 1)
    system.kill("ingest", 1)
    return "two of each service; one cycles and one ingest killed -9 for good"


EVERY_SERVICE = ("ingest", "cycles", "analysis", "alerts", "gateway")


async def fault_replicas_join_and_one_dies(system: System, bus: Bus, load: Load) -> str:
    """A second replica of every service and a third of cycles join under load, so partitions
    move; while they move, a cycles, an alerts and an analysis replica are killed -9 for good."""
    await _later(load.seconds / 4)
    for name in (*EVERY_SERVICE, "cycles"):
        system.start(name)
    await _later(2.5)
    system.kill("cycles", 0)
    system.kill("alerts", 0)
    system.kill("analysis", 1)
    return (f"replicas joined at {load.seconds / 4:.0f} s (2 of each service, 3 of cycles); cycles, alerts and "
            "analysis replicas killed -9 for good 2.5 s later")  # fmt: skip


async def fault_cluster_leader(system: System, bus: Bus, load: Load) -> str:
    assert system.cluster is not None
    await _later(load.seconds / 3)
    info = await bus.js.stream_info(subjects.SAMPLES.name)
    leader = info.cluster.leader if info.cluster else None
    index = int(leader[1:]) if leader and leader.startswith("n") else 0
    system.cluster.kill(index)
    await _later(5.0)
    await asyncio.to_thread(system.cluster.start, index)
    return f"stream leader {leader} killed -9, back 5 s later"


@dataclass(frozen=True)
class Scenario:
    fault_name: str
    fault: Fault | None
    services: tuple[str, ...] = ("ingest", "cycles")
    cluster: bool = False
    metrics: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("none (baseline)", None),
    Scenario("kill -9 ingest", fault_kill_service("ingest")),
    Scenario("kill -9 cycles", fault_kill_service("cycles")),
    Scenario("kill -9 alerts", fault_kill_service("alerts"), ("ingest", "cycles", "alerts")),
    Scenario("kill -9 nats-server", fault_kill_nats),
    Scenario("kill -9 PostgreSQL", fault_kill_pg),
    Scenario("PostgreSQL outage", fault_pg_outage),
    Scenario("2 of every service", fault_replica_killed,
             ("ingest", "ingest", "cycles", "cycles", "alerts", "alerts")),
    Scenario("3-node cluster, leader killed", fault_cluster_leader, cluster=True),
    Scenario("3-node cluster, replicas join, one killed", fault_replicas_join_and_one_dies,
             EVERY_SERVICE, cluster=True, metrics=True),
)  # fmt: skip


async def _start_system(root: Path, cluster: bool) -> System:
    pg = await asyncio.to_thread(Postgres(root / "pg", port=free_port()).start)
    # closed as vertac run's bus is: each service connects as its own user, this driver as admin
    users = BusUsers(root / "nats.secrets", root / "nats.users.conf")
    passwords = users.ensure()
    nats_server = None
    nodes = None
    if cluster:
        nodes = ClusterNats(root / "cluster", users.config_file)
        await asyncio.to_thread(nodes.start)
    else:
        nats_server = await asyncio.to_thread(
            NatsServer(root / "nats", port=free_port(), monitor_port=free_port(),
                       config=users.config_file).start
        )  # fmt: skip
    system = System(root, CommonSettings(), pg, nats_server, nodes, passwords)
    system.common = CommonSettings(
        nats_url=system.bus_url(ADMIN), database_url=pg.url,
        bus_replicas=3 if cluster else 1, startup_retry=True,
    )  # fmt: skip
    await migrate(pg.url)
    return system


def expected_cycles(signal_parts: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, int]]:
    """(start_ns, end_ns) of every whole high run of the published ``cycle_active`` signal."""
    t = np.concatenate([p[0] for p in signal_parts])
    v = np.concatenate([p[1] for p in signal_parts]).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t, high = t[order], v[order] >= 0.5
    edges = np.flatnonzero(np.diff(high.astype(np.int8)))
    rises = edges[high[edges + 1]] + 1
    falls = edges[~high[edges + 1]] + 1
    runs = []
    for r in rises.tolist():
        after = falls[falls > r]
        if len(after):
            runs.append((int(t[r]), int(t[after[0]])))
    return runs


async def _stored(url: str) -> tuple[set[int], int, int]:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute("SELECT seq FROM live_frames WHERE stream_id = %s", (STREAM,))
        seqs = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT coalesce(max(frames), 0) FROM live_stream_stats WHERE stream_id = %s",
            (STREAM,),
        )
        row = await cur.fetchone()
        return set(seqs), len(seqs), int(row[0]) if row else 0


async def _cycle_rows(url: str) -> list[tuple[str, int, int]]:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute(
            "SELECT state, (extract(epoch FROM started_at) * 1e9)::bigint,"
            " (extract(epoch FROM ended_at) * 1e9)::bigint FROM live_cycles"
            " WHERE stream_id = %s AND state <> 'running'",
            (STREAM,),
        )
        return [(r[0], int(r[1]), int(r[2] or 0)) for r in await cur.fetchall()]


async def _stuck(url: str, expected: list[tuple[int, int]]) -> int:
    """Cycles still running that began before the last whole cycle the signal holds ended."""
    last_end = max((e for _, e in expected), default=0)
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM live_cycles WHERE stream_id = %s AND state = 'running'"
            " AND (extract(epoch FROM started_at) * 1e9)::bigint < %s",
            (STREAM, last_end),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _completed_after_reference(url: str) -> list[str]:
    """Completed cycles that come after those the automatic reference is built from."""
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute(
            "SELECT cycle_id FROM live_cycles WHERE stream_id = %s AND state = 'completed'"
            " ORDER BY started_at OFFSET %s",
            (STREAM, AUTO_REFERENCE_CYCLES),
        )
        return [r[0] for r in await cur.fetchall()]


async def _analysed_all(system: System) -> bool:
    async with await psycopg.AsyncConnection.connect(system.common.database_url,
                                                     connect_timeout=3) as conn:  # fmt: skip
        cur = await conn.execute(
            "SELECT count(DISTINCT cycle_id) FROM live_deviations WHERE stream_id = %s", (STREAM,)
        )
        row = await cur.fetchone()
    want = await _completed_after_reference(system.common.database_url)
    return bool(row) and int(row[0]) >= len(want)


async def _count_analyses(bus: Bus, system: System, row: Row) -> None:
    """Every analysis event on the bus, by cycle: each completed cycle after the reference is
    analysed exactly once."""
    per_cycle: dict[str, int] = {}
    sub = await bus.js.subscribe(subjects.analysis(STREAM), ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            cycle_id = AnalysisCompleted.model_validate_json(msg.data).cycle_id
            per_cycle[cycle_id] = per_cycle.get(cycle_id, 0) + 1
    finally:
        await sub.unsubscribe()
    row.analyses = sum(per_cycle.values())
    row.dup_analyses = sum(n - 1 for n in per_cycle.values())
    want = await _completed_after_reference(system.common.database_url)
    row.missing_analyses = sum(1 for c in want if c not in per_cycle)


async def _count_alerts(
    url: str, row: Row, signal_parts: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """The rule is raised once per high run of ``cycle_active``; an alert event twice is a
    duplicate."""
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        cur = await conn.execute(
            "SELECT state, occurrences, count(*) FROM live_alert_history"
            " WHERE alert_id LIKE %s GROUP BY state, occurrences",
            (f"{STREAM}.active.%",),
        )
        rows = await cur.fetchall()
    row.alerts_raised = sum(int(n) for state, _, n in rows if state == "raised")
    row.dup_alerts = sum(int(n) - 1 for _, _, n in rows)
    if row.dup_alerts:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
            cur = await conn.execute(
                "SELECT alert_id, state, occurrences, severity, at FROM live_alert_history"
                " WHERE alert_id LIKE %s ORDER BY at",
                (f"{STREAM}.active.%",),
            )
            history = await cur.fetchall()
        row.notes += (
            f"; alert history {[(a, s, o, sev, at.isoformat()) for a, s, o, sev, at in history]}"
        )
    t = np.concatenate([p[0] for p in signal_parts])
    v = np.concatenate([p[1] for p in signal_parts])[np.argsort(t, kind="stable")] >= 0.5
    row.expected_raises = int(v[0]) + int(np.count_nonzero(v[1:] & ~v[:-1]))


async def _lag(bus: Bus) -> int:
    total = 0
    for info in await bus.js.consumers_info(subjects.SAMPLES.name):
        if info.name.startswith(("ingest", "cycles")):
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total


async def run_scenario(scenario: Scenario, load: Load) -> Row:
    root = Path(tempfile.mkdtemp(prefix="vertac-chaos-"))
    system = await _start_system(root, scenario.cluster)
    system.metrics = scenario.metrics
    row = Row(scenario.fault_name)
    bus = await open_bus(system.common, "vertac-chaos")
    try:
        kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
        config = CycleConfig(
            trigger="signal", signal_sensor="cycle_active", start_above=0.5, stop_below=0.5
        )
        await kv.put(STREAM, config.model_dump_json().encode())
        if "alerts" in scenario.services:  # raised in every cycle, cleared after it
            rules = await bus.js.key_value(subjects.KV_ALERT_RULES)
            rule = AlertRule(rule_id="active", stream_id=STREAM, kind="limit",
                             sensor_id="cycle_active", hi=0.5)  # fmt: skip
            await rules.put(f"{STREAM}.{rule.rule_id}", rule.model_dump_json().encode())
        for name in scenario.services:
            system.start(name)
        model = build_machine(
            stream_id=STREAM, sensors=load.sensors, rate_hz=load.rate_hz,
            cycle_s=load.cycle_s, active_signal=True,
        )  # fmt: skip
        published: list[int] = []
        signal_parts: list[tuple[np.ndarray, np.ndarray]] = []
        samples = 0

        def keep(frame: Frame) -> None:
            nonlocal samples
            published.append(frame.seq)
            samples += frame.n_samples
            for s in frame.series:
                if s.sensor_id == "cycle_active":
                    signal_parts.append((s.timestamps().copy(), s.values.copy()))

        frames = round(load.seconds * 10)
        started = time.monotonic()
        publishing = asyncio.ensure_future(
            simulate(bus, model, SimulateOptions(speed=load.speed, frames=frames, frame_ms=100),
                     on_frame=keep)
        )  # fmt: skip
        fault = asyncio.ensure_future(
            scenario.fault(system, bus, load) if scenario.fault else asyncio.sleep(0, "")
        )
        result = await publishing
        publish_end = time.monotonic()
        row.notes = await fault
        row.notes += f" (publisher retries {result.retries}, reordered {result.reordered})"
        row.published = result.frames
        row.samples_per_s = samples / max(publish_end - started, 1e-9)
        expected = expected_cycles(signal_parts)
        want = set(published)
        deadline = time.monotonic() + max(120.0, load.outage_s * 3)
        seqs: set[int] = set()
        rows_n = stats_n = 0
        while time.monotonic() < deadline:
            try:
                seqs, rows_n, stats_n = await _stored(system.common.database_url)
                lag = await _lag(bus)
            except Exception:  # PostgreSQL or NATS still coming back
                await asyncio.sleep(1)
                continue
            done_cycles = len(await _cycle_rows(system.common.database_url))
            caught_up = want <= seqs and lag == 0 and done_cycles >= len(expected)
            if caught_up and ("analysis" not in scenario.services or await _analysed_all(system)):
                break
            await asyncio.sleep(0.5)
        row.catch_up_s = time.monotonic() - publish_end
        if time.monotonic() >= deadline:
            row.notes += "; not caught up: " + await _diagnose(bus, system)
        row.persisted = len(seqs & want)
        row.lost = len(want - seqs)
        row.duplicated = (rows_n - len(seqs)) + max(stats_n - rows_n, 0)
        cycles = await _cycle_rows(system.common.database_url)
        row.cycles = len(expected)
        row.aborted = sum(1 for state, _, _ in cycles if state == "aborted")
        starts = [s for state, s, _ in cycles if state == "completed"]
        row.dup_cycles = len(starts) - len(set(starts))
        tol = 2 * NS // 100  # 20 ms: timestamps round-trip through timestamptz (microseconds)
        right = 0
        for start, end in expected:
            if any(abs(s - start) <= tol and abs(e - end) <= tol
                   for state, s, e in cycles if state == "completed"):  # fmt: skip
                right += 1
        row.right = right
        row.missing = len(expected) - right
        row.stuck = await _stuck(system.common.database_url, expected)
        if "analysis" in scenario.services:
            await _count_analyses(bus, system, row)
        if "alerts" in scenario.services:
            await _count_alerts(system.common.database_url, row, signal_parts)
        if not row.clean() and "not caught up" not in row.notes:
            row.notes += "; " + await _diagnose(bus, system)
        running = len(system.alive())
        if running < sum(len(p) for p in system.procs.values()) - _killed_for_good(scenario):
            row.notes += "; a service process died"
            row.died = True
        row.refused = system.refusals()
        if row.refused:
            row.notes += f"; the bus refused: {row.refused[0]}"
    finally:
        await bus.close()
        await asyncio.to_thread(system.stop)
    return row


async def _diagnose(bus: Bus, system: System) -> str:
    parts = []
    try:
        for info in await bus.js.consumers_info(subjects.SAMPLES.name):
            if info.num_pending or info.num_ack_pending:
                parts.append(f"{info.name} pending {info.num_pending} ack {info.num_ack_pending}")
        states: dict[str, int] = {}
        for state, _, _ in await _cycle_rows(system.common.database_url):
            states[state] = states.get(state, 0) + 1
        parts.append(f"cycles {states}")
        async with await psycopg.AsyncConnection.connect(system.common.database_url) as conn:
            cur = await conn.execute(
                "SELECT cycle_no, state, end_reason, late_frames, gaps FROM live_cycles"
                " WHERE stream_id = %s ORDER BY cycle_no", (STREAM,))  # fmt: skip
            parts.append(f"rows {await cur.fetchall()}")
        kv = await bus.js.key_value(subjects.KV_CYCLE_STATE)
        entry = await kv.get(STREAM)
        parts.append(f"state {(entry.value or b'')[:400]!r}")
    except Exception as exc:  # diagnostics only
        parts.append(repr(exc))
    return ", ".join(parts)


def _killed_for_good(scenario: Scenario) -> int:
    return {fault_replica_killed: 2, fault_replicas_join_and_one_dies: 3}.get(
        scenario.fault,
        0,  # type: ignore[call-overload]
    )


def table(rows: list[Row]) -> str:
    head = ("fault", "published", "persisted", "lost", "dup", "cycles", "right", "aborted",
            "dup cyc", "missing", "stuck", "analyses (dup, missing)", "alerts raised/expected (dup)",
            "catch-up s", "samples/s")  # fmt: skip
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join(str(x) for x in (
            r.fault, r.published, r.persisted, r.lost, r.duplicated, r.cycles, r.right,
            r.aborted, r.dup_cycles, r.missing, r.stuck,
            "-" if r.analyses < 0 else f"{r.analyses} ({r.dup_analyses}, {r.missing_analyses})",
            "-" if r.alerts_raised < 0 else
            f"{r.alerts_raised}/{r.expected_raises} ({r.dup_alerts})",
            f"{r.catch_up_s:.1f}",
            f"{r.samples_per_s:,.0f}")))  # fmt: skip
    return "\n".join(f"| {line} |" for line in lines)


async def run_all(load: Load, only: list[str] | None = None) -> list[Row]:
    rows = []
    for scenario in SCENARIOS:
        if only and not any(o.lower() in scenario.fault_name.lower() for o in only):
            continue
        row = await run_scenario(scenario, load)
        sys.stdout.write(f"{row.fault}: {row.notes or 'no fault'}\n")
        sys.stdout.flush()
        rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    load = SHORT if "--short" in argv else FULL
    for arg in argv:
        if arg.startswith("--outage-s="):
            load = replace(load, outage_s=float(arg.split("=", 1)[1]))
    only = [a for a in argv if not a.startswith("--")]
    rows = asyncio.run(run_all(load, only or None))
    sys.stdout.write("\n" + table(rows) + "\n")
    return 0 if all(r.clean() for r in rows) else 1


def run_cli() -> Any:
    sys.exit(main(sys.argv[1:]))
