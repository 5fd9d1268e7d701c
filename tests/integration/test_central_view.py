"""Central shows its sites: a site (its own bus and database, its real cycles, analysis and
alerts services, a simulated machine) and a central VerTac (closed bus, its real ingest, cycles,
analysis, alerts and gateway). Central stores every frame, registration, cycle, analysis and
alert of the site once, under ``<site>.<stream_id>``, serves them over REST, and sends the
site's stream cycle commands that the site carries out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import psycopg
import pytest
import websockets

from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.messages import AlertRule, CycleConfig
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import migrate
from services.common.runtime import open_bus
from services.embedded import NatsServer, free_port
from services.federation import CENTRAL_DOMAIN, LeafUsers, site_leaf_remote
from tests.conftest import (
    ClosedBus,
    Running,
    admin_token,
    eventually,
    refusals,
    registry_service,
    serve_gateway,
    start_on_free_ports,
)
from tests.helpers import frame_count

pytestmark = pytest.mark.integration
SITE = "north"
MACHINE = "press-1"
AT_CENTRAL = f"{SITE}.{MACHINE}"


@dataclass
class Federation:
    site: CommonSettings
    central: CommonSettings


@pytest.fixture
async def federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_cluster) -> AsyncIterator[Federation]:  # type: ignore[no-untyped-def]  # fmt: skip
    closed = ClosedBus(tmp_path / "bus", sites=(SITE,))
    leaf_users = LeafUsers(tmp_path / "leaf.secrets")
    central = start_on_free_ports(lambda: NatsServer(
        tmp_path / "central", port=free_port(), monitor_port=free_port(),
        config=closed.users.config_file, domain=CENTRAL_DOMAIN, leaf_port=free_port(),
        leaf_users=leaf_users.ensure((SITE,)),
    ))  # fmt: skip
    closed.install(monkeypatch)
    closed.declare(central.url)  # with central's stream of the site, as vertac central does
    assert central.leaf_port is not None
    remote = site_leaf_remote(leaf_users.url(SITE, "127.0.0.1", central.leaf_port))
    site = start_on_free_ports(lambda: NatsServer(
        tmp_path / SITE, port=free_port(), monitor_port=free_port(), domain=SITE,
        leaf_remotes=(remote,),
    ))  # fmt: skip
    databases = []
    for _ in range(2):
        url = pg_cluster.new_database()
        await migrate(url)
        databases.append(url)
    site_common = CommonSettings(nats_url=site.url, database_url=databases[0], site=SITE,
                                 max_deliver=3)  # fmt: skip
    nc = await nats.connect(site.url)
    await init_bus(nc.jetstream(), site_common)
    await nc.close()
    central_common = CommonSettings(
        nats_url=closed.admin_url(central.url), database_url=databases[1], sites=SITE, max_deliver=3
    )
    try:
        yield Federation(site_common, central_common)
    finally:
        site.stop()
        central.stop()
    refused = refusals(central.store_dir / "nats-server.log")
    assert not refused, "central's bus refused a service something:\n" + "\n".join(refused[:20])


async def rows(url: str, sql: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(sql, params)  # type: ignore[arg-type]
        return await cur.fetchall()


def start_services(running: Running, common: CommonSettings, names: tuple[str, ...]) -> None:
    from services.alerts.app import serve as alerts
    from services.alerts.config import Settings as AlertsSettings
    from services.analysis.app import serve as analysis
    from services.analysis.config import Settings as AnalysisSettings
    from services.cycles.app import serve as cycles
    from services.cycles.config import Settings as CyclesSettings
    from services.ingest.app import serve as ingest
    from services.ingest.config import Settings as IngestSettings

    made = {
        "ingest": lambda: ingest(IngestSettings(metrics_port=0), common, running.stop),
        "cycles": lambda: cycles(CyclesSettings(metrics_port=0, tick_s=0.1), common, running.stop),
        "analysis": lambda: analysis(
            AnalysisSettings(metrics_port=0, auto_reference_cycles=1), common, running.stop
        ),
        "alerts": lambda: alerts(
            AlertsSettings(metrics_port=0, rules_refresh_s=0.1), common, running.stop
        ),
    }
    for name in names:
        running.start(made[name]())


@pytest.mark.timeout(300)
async def test_central_stores_and_serves_a_sites_data_and_commands_it(
    federation: Federation, running: Running
) -> None:
    site, central = federation.site, federation.central
    bus = await open_bus(site, "vertac-test-site")
    try:
        kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
        await kv.put(MACHINE, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                          start_above=0.5, stop_below=0.5).model_dump_json().encode())  # fmt: skip
        rule = AlertRule(rule_id="high", stream_id=MACHINE, kind="limit", sensor_id="pressure_1",
                         hi=-1e9)  # fmt: skip
        rules = await bus.js.key_value(subjects.KV_ALERT_RULES)
        await rules.put(f"{MACHINE}.high", rule.model_dump_json().encode())
        start_services(running, site, ("ingest", "cycles", "analysis", "alerts"))
        start_services(running, central, ("ingest", "cycles", "analysis", "alerts"))
        async with registry_service(site):
            model = build_machine(stream_id=MACHINE, sensors=4, rate_hz=100, cycle_s=4,
                                  active_signal=True)  # fmt: skip
            # three whole machine cycles (active 0.4-3.2 s of each 4 s)
            await simulate(bus, model, SimulateOptions(speed=0, frames=120))

            async def site_done() -> bool:
                done = await rows(site.database_url, "SELECT count(*) FROM live_deviations")
                return done[0][0] >= 2

            await eventually(site_done, timeout=120)

        # what the site has, central has: once each, under the site's name
        async def same() -> bool:
            return not await _differences(site, central)

        try:
            await eventually(same, timeout=120)
        except AssertionError:
            raise AssertionError(await _differences(site, central)) from None
        assert await frame_count(central.database_url, AT_CENTRAL) == 120
        assert await frame_count(central.database_url, MACHINE) == 0
        rollups = await rows(central.database_url, "SELECT count(*) FROM live_rollup_1s"
                             " WHERE stream_id = %s", AT_CENTRAL)  # fmt: skip
        assert rollups[0][0] >= 12

        token = await admin_token(central.database_url)
        async with (
            serve_gateway(central) as base,
            httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as http,
        ):
            streams = (await http.get("/api/live/streams")).json()
            assert AT_CENTRAL in [s["stream_id"] for s in streams]
            one_site = (await http.get("/api/live/streams", params={"site": SITE})).json()
            assert [s["stream_id"] for s in one_site] == [AT_CENTRAL]
            status = (await http.get(f"/api/live/stream/{AT_CENTRAL}/status")).json()
            assert status["registered"] is True
            assert status["frames_persisted"] == 120
            assert status["cycle_state"] == "idle"
            cycles = (await http.get(f"/api/live/stream/{AT_CENTRAL}/cycles")).json()
            assert len(cycles) == 3
            assert all(c["cycle_id"].startswith(f"{AT_CENTRAL}-") for c in cycles)
            assert sum(c["health_score"] is not None for c in cycles) >= 2
            history = (await http.get(f"/api/live/stream/{AT_CENTRAL}/samples",
                                      params={"start": "2000-01-01T00:00:00Z"})).json()  # fmt: skip
            assert "pressure_1" in history["sensors"]
            alerts = (await http.get("/api/live/alerts", params={"stream_id": AT_CENTRAL})).json()
            assert [a["alert_id"] for a in alerts] == [f"{AT_CENTRAL}.high.1"]
            # a setting of the site's stream is the site's: refused with the reason
            put = await http.put(f"/api/live/stream/{AT_CENTRAL}/cycle-config",
                                 json={"trigger": "manual"})  # fmt: skip
            assert put.status_code == 409, put.text
            assert "site 'north'" in put.json()["error"]
            # a viewer at central watches the site's stream live
            browser: list[dict] = []  # type: ignore[type-arg]

            async def listen() -> None:
                ws_url = base.replace("http", "ws") + f"/api/live/ws/stream/{AT_CENTRAL}"
                async with websockets.connect(
                    ws_url, max_size=None, additional_headers={"Authorization": f"Bearer {token}"}
                ) as ws:
                    async for text in ws:
                        browser.append(json.loads(text))

            listener = asyncio.ensure_future(listen())

            async def ready() -> bool:
                return any(m["type"] == "ready" for m in browser)

            await eventually(ready)
            # a cycle command is sent to the site, whose cycles service runs it
            started = await http.post("/api/live/cycle/start", params={"stream_id": AT_CENTRAL})
            assert started.status_code == 202, started.text

            async def running_at_central() -> bool:
                got = await http.get(f"/api/live/stream/{AT_CENTRAL}/status")
                return bool(got.json()["cycle_state"] == "running")

            await eventually(running_at_central, timeout=60)
            async with registry_service(site):  # the machine runs on: frames arrive live
                await simulate(bus, model, SimulateOptions(speed=5, frames=20))

            def shown(kind: str) -> list[dict]:  # type: ignore[type-arg]
                return [m["data"] for m in browser if m["type"] == kind]

            async def live() -> bool:
                return bool(shown("samples") and shown("state_change"))

            await eventually(live, timeout=60)
            listener.cancel()
            assert {m["stream_id"] for m in shown("samples")} == {AT_CENTRAL}
            assert "pressure_1" in shown("samples")[-1]["sensors"]
            change = shown("state_change")[0]
            assert change["stream_id"] == AT_CENTRAL
            assert change["event"]["cycle_id"].startswith(f"{AT_CENTRAL}-")
            assert change["event"]["state"] == "running"
        at_site = await rows(site.database_url, "SELECT count(*) FROM live_cycles"
                             " WHERE state = 'running' AND stream_id = %s", MACHINE)  # fmt: skip
        assert at_site[0][0] == 1
    finally:
        await bus.close()


_TABLES = {
    "live_frames": "SELECT stream_id, seq FROM live_frames",
    "live_cycles": "SELECT cycle_id, stream_id, state, samples::text FROM live_cycles",
    "live_deviations": "SELECT cycle_id, stream_id, reference_version, health_score"
    " FROM live_deviations",
    "live_alerts": "SELECT alert_id, stream_id, state, occurrences FROM live_alerts",
    "live_streams": "SELECT stream_id, device_name FROM live_streams",
}


async def _differences(site: CommonSettings, central: CommonSettings) -> list[str]:
    """The site's tables whose rows are not all at central, each with its ids qualified by the
    site (and nothing more)."""
    out = []
    for table, sql in _TABLES.items():
        there = sorted(
            tuple(f"{SITE}.{v}" if i < 2 and isinstance(v, str) and v.startswith(MACHINE) else v
                  for i, v in enumerate(r))
            for r in await rows(site.database_url, sql)
        )  # fmt: skip
        here = sorted(await rows(central.database_url, sql))
        if not there or here != there:
            out.append(f"{table}: site {len(there)} rows, central {len(here)}: "
                       f"{sorted(set(there) ^ set(here))[:3]}")  # fmt: skip
    return out
