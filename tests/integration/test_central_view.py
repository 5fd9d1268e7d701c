"""Central shows its sites: two sites (each its own bus and database, its real ingest, cycles,
analysis and alerts services, a simulated machine) and a central VerTac (closed bus, its real
ingest, cycles, analysis, alerts and gateway). One site's link is cut for
``VERTAC_TEST_FEDERATION_OUTAGE_S`` seconds while the machines run: 5 by default, the machines
4 times faster than real time; 600 is the done-when's ten minutes, in real time. Afterwards
central has every frame, registration, cycle, analysis and alert of both sites once, under
``<site>.<stream_id>``, serves them over REST and live, and sends a site cycle commands, alert
acknowledgements and references that the site carries out."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import psycopg
import pytest
import websockets

from edge.run import SimulateOptions, SimulateResult, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.messages import AlertRule, CycleConfig
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.common.db import migrate
from services.common.runtime import open_bus
from services.embedded import NatsServer, free_port
from services.federation import CENTRAL_DOMAIN, site_leaf_remote
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
from tests.link import Link

pytestmark = pytest.mark.integration
SITES = ("north", "south")
MACHINE = "press-1"  # at both sites: central tells them apart
AT_CENTRAL = f"north.{MACHINE}"
OUTAGE_S = float(os.environ.get("VERTAC_TEST_FEDERATION_OUTAGE_S", "5"))
SPEED = 1.0 if OUTAGE_S > 60 else 4.0  # a long outage in real time, a short one 4 times faster


@dataclass
class Site:
    name: str
    common: CommonSettings
    link: Link


@dataclass
class Federation:
    sites: list[Site]
    central: CommonSettings


@pytest.fixture
async def federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_cluster) -> AsyncIterator[Federation]:  # type: ignore[no-untyped-def]  # fmt: skip
    closed = ClosedBus(tmp_path / "bus", sites=SITES)
    leaf_users = closed.users.leaf_users  # each site signs in to central as its own user
    central = start_on_free_ports(lambda: NatsServer(
        tmp_path / "central", port=free_port(), monitor_port=free_port(),
        config=closed.users.config_file, domain=CENTRAL_DOMAIN, leaf_port=free_port(),
    ))  # fmt: skip
    closed.install(monkeypatch)
    closed.declare(central.url)  # with central's streams of the sites, as vertac central does
    assert central.leaf_port is not None
    servers, sites = [], []
    try:
        for name in SITES:
            link = await Link(central.leaf_port).start()  # the wide-area link, cut at will
            remote = site_leaf_remote(leaf_users.url(name, "127.0.0.1", link.port))
            server = start_on_free_ports(lambda n=name, r=remote: NatsServer(  # type: ignore[misc]
                tmp_path / n, port=free_port(), monitor_port=free_port(), domain=n,
                leaf_remotes=(r,),
            ))  # fmt: skip
            servers.append(server)
            database = pg_cluster.new_database()
            await migrate(database)
            common = CommonSettings(nats_url=server.url, database_url=database, site=name,
                                    max_deliver=3)  # fmt: skip
            nc = await nats.connect(server.url)
            await init_bus(nc.jetstream(), common)
            await nc.close()
            sites.append(Site(name, common, link))
        database = pg_cluster.new_database()
        await migrate(database)
        central_common = CommonSettings(
            nats_url=closed.admin_url(central.url), database_url=database, sites=",".join(SITES),
            max_deliver=3,
        )  # fmt: skip
        yield Federation(sites, central_common)
    finally:
        for site in sites:
            await site.link.close()
        for server in servers:
            server.stop()
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


async def prepare(site: Site) -> None:
    """A machine whose cycles its signal marks, and a limit rule that fires at once."""
    bus = await open_bus(site.common, "vertac-test-site")
    try:
        kv = await bus.js.key_value(subjects.KV_CYCLE_CONFIG)
        await kv.put(MACHINE, CycleConfig(trigger="signal", signal_sensor="cycle_active",
                                          start_above=0.5, stop_below=0.5).model_dump_json().encode())  # fmt: skip
        rule = AlertRule(rule_id="high", stream_id=MACHINE, kind="limit", sensor_id="pressure_1",
                         hi=-1e9)  # fmt: skip
        rules = await bus.js.key_value(subjects.KV_ALERT_RULES)
        await rules.put(f"{MACHINE}.high", rule.model_dump_json().encode())
    finally:
        await bus.close()


async def run_machine(
    site: Site, frames: int, speed: float, start_ns: int | None = None
) -> SimulateResult:
    """The site's machine, through its edge's path: registered, then frame by frame."""
    bus = await open_bus(site.common, "vertac-test-site")
    try:
        async with registry_service(site.common):
            model = build_machine(stream_id=MACHINE, sensors=4, rate_hz=100, cycle_s=4,
                                  active_signal=True)  # fmt: skip
            options = SimulateOptions(speed=speed, frames=frames, start_ns=start_ns)
            return await simulate(bus, model, options)
    finally:
        await bus.close()


@pytest.mark.timeout(OUTAGE_S * 2 + 300)
async def test_central_has_every_site_record_once_after_a_cut_link_and_serves_them(
    federation: Federation, running: Running
) -> None:
    sites, central = federation.sites, federation.central
    north = sites[0]
    for site in sites:
        await prepare(site)
        start_services(running, site.common, ("ingest", "cycles", "analysis", "alerts"))
    start_services(running, central, ("ingest", "cycles", "analysis", "alerts"))
    # one machine cycle (active 0.4-3.2 s of each 4 s) at once: the links are up
    t0 = time.time_ns() // 10**9 * 10**9
    for site in sites:
        await run_machine(site, 40, speed=0, start_ns=t0)

    async def arrived(site: Site, n: int) -> bool:
        return await frame_count(central.database_url, f"{site.name}.{MACHINE}") >= n

    for site in sites:
        await eventually(lambda s=site: arrived(s, 40), timeout=120)
    # then whole cycles in real time, past the outage
    frames = 40 * math.ceil((OUTAGE_S * SPEED + 8) / 4)
    machines = [
        asyncio.ensure_future(run_machine(site, frames, speed=SPEED, start_ns=t0 + 4 * 10**9))
        for site in sites
    ]
    await eventually(lambda: arrived(north, 45), timeout=60)
    north.link.cut()
    await asyncio.sleep(OUTAGE_S)
    cut_off = await frame_count(central.database_url, AT_CENTRAL)
    north.link.restore()
    restored = time.monotonic()
    sent = await asyncio.gather(*machines)
    assert [r.frames for r in sent] == [frames, frames]
    frames += 40

    async def site_done(site: Site) -> bool:  # its last cycle analysed
        done = await rows(site.common.database_url, "SELECT count(*) FROM live_deviations")
        return done[0][0] >= frames // 40 - 1

    async def site_has_all(site: Site) -> bool:  # the cut site lost nothing meanwhile
        return await frame_count(site.common.database_url, MACHINE) == frames

    for site in sites:
        await eventually(lambda s=site: site_done(s), timeout=120)
        await eventually(lambda s=site: site_has_all(s), timeout=60)

    # what each site has, central has: once each, under the site's name
    async def same() -> bool:
        return not await _differences(sites, central)

    try:
        await eventually(same, timeout=OUTAGE_S + 120)
    except AssertionError:
        raise AssertionError(await _differences(sites, central)) from None
    print(f"north: {frames - cut_off} frames behind after the outage; central had every record "
          f"of both sites {time.monotonic() - restored:.1f} s after the link came back")  # fmt: skip
    assert cut_off < frames, "central got north's frames through a cut link"
    for site in sites:
        assert await frame_count(central.database_url, f"{site.name}.{MACHINE}") == frames
    assert await frame_count(central.database_url, MACHINE) == 0
    rollups = await rows(central.database_url, "SELECT count(*) FROM live_rollup_1s"
                         " WHERE stream_id = %s", AT_CENTRAL)  # fmt: skip
    assert rollups[0][0] >= frames // 10
    await serves_and_commands(sites, central, frames)


async def serves_and_commands(sites: list[Site], central: CommonSettings, frames: int) -> None:
    """Central's REST and live view show north's stream; a cycle start sent at central runs at
    north; a change of north's settings is refused with the reason; each site's link state is
    shown, a cut one within seconds."""
    north, south = sites
    token = await admin_token(central.database_url)
    async with (
        serve_gateway(central) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http,
    ):

        async def links() -> dict[str, dict]:  # type: ignore[type-arg]
            return {s["site"]: s for s in (await http.get("/api/sites")).json()}

        async def linked() -> bool:
            return all(s["state"] == "linked" and s["lag"] == 0 for s in (await links()).values())

        await eventually(linked, timeout=30)
        assert set(await links()) == set(SITES)
        assert (await links())["north"]["messages"] >= frames
        south.link.cut()

        async def south_cut_off() -> bool:
            return bool((await links())["south"]["state"] == "cut_off")

        await eventually(south_cut_off, timeout=30)
        assert (await links())["north"]["state"] == "linked"
        south.link.restore()
        streams = (await http.get("/api/live/streams")).json()
        assert {f"{s}.{MACHINE}" for s in SITES} <= {s["stream_id"] for s in streams}
        one_site = (await http.get("/api/live/streams", params={"site": "north"})).json()
        assert [s["stream_id"] for s in one_site] == [AT_CENTRAL]
        status = (await http.get(f"/api/live/stream/{AT_CENTRAL}/status")).json()
        assert status["registered"] is True
        assert status["frames_persisted"] == frames
        assert status["cycle_state"] == "idle"
        cycles = (await http.get(f"/api/live/stream/{AT_CENTRAL}/cycles",
                                 params={"limit": 1000})).json()  # fmt: skip
        assert len(cycles) == frames // 40
        assert all(c["cycle_id"].startswith(f"{AT_CENTRAL}-") for c in cycles)
        assert sum(c["health_score"] is not None for c in cycles) >= frames // 40 - 1
        recent = await http.get(f"/api/live/stream/{AT_CENTRAL}/recent",
                                params={"seconds": 300})  # fmt: skip
        assert "pressure_1" in recent.json()["sensors"], recent.text
        overlay = await http.get(f"/api/live/cycles/{cycles[0]['cycle_id']}/overlay")
        assert overlay.status_code == 409
        assert "kept at the site" in overlay.json()["error"]
        history = (await http.get(f"/api/live/stream/{AT_CENTRAL}/samples",
                                  params={"start": "2000-01-01T00:00:00Z"})).json()  # fmt: skip
        assert "pressure_1" in history["sensors"]
        alerts = (await http.get("/api/live/alerts", params={"stream_id": AT_CENTRAL})).json()
        assert [a["alert_id"] for a in alerts] == [f"{AT_CENTRAL}.high.1"]
        # acknowledged at central: the site's alerts service does it, its event comes back
        ack = await http.post(f"/api/live/alerts/{AT_CENTRAL}.high.1/ack",
                              json={"comment": "seen at headquarters"})  # fmt: skip
        assert ack.status_code == 202, ack.text

        async def acknowledged() -> bool:
            got = await http.get("/api/live/alerts", params={"stream_id": AT_CENTRAL})
            return bool(got.json()[0]["state"] == "acknowledged")

        await eventually(acknowledged, timeout=60)
        at_north = await rows(north.common.database_url,
                              "SELECT state FROM live_alerts WHERE alert_id = %s",
                              f"{MACHINE}.high.1")  # fmt: skip
        assert at_north == [("acknowledged",)]
        # a reference from two of the site's cycles, asked at central, made at the site
        chosen = [c["cycle_id"] for c in cycles[-3:-1]]
        pushed = await http.post(f"/api/live/stream/{AT_CENTRAL}/references",
                                 json={"cycle_ids": chosen, "activate": True,
                                       "description": "from headquarters"})  # fmt: skip
        assert pushed.status_code == 202, pushed.text

        async def made_at_north() -> bool:
            got = await rows(north.common.database_url,
                             "SELECT source_cycles, active FROM live_references"
                             " WHERE stream_id = %s AND description = %s",
                             MACHINE, "from headquarters")  # fmt: skip
            return got == [([c.removeprefix("north.") for c in chosen], True)]

        await eventually(made_at_north, timeout=120)
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
        await run_machine(north, 20, speed=5)  # the machine runs on: frames arrive live

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
    at_site = await rows(north.common.database_url, "SELECT count(*) FROM live_cycles"
                         " WHERE state = 'running' AND stream_id = %s", MACHINE)  # fmt: skip
    assert at_site[0][0] == 1


_TABLES = {
    "live_frames": "SELECT stream_id, seq FROM live_frames",
    "live_cycles": "SELECT cycle_id, stream_id, state, samples::text FROM live_cycles",
    "live_deviations": "SELECT cycle_id, stream_id, reference_version, health_score"
    " FROM live_deviations",
    "live_alerts": "SELECT alert_id, stream_id, state, occurrences FROM live_alerts",
    "live_streams": "SELECT stream_id, device_name FROM live_streams",
}


async def _differences(sites: list[Site], central: CommonSettings) -> list[str]:
    """The sites' tables whose rows are not all at central, each with its ids qualified by
    its site (and nothing more, nothing less)."""
    out = []
    for table, sql in _TABLES.items():
        here = sorted(await rows(central.database_url, sql))
        there = []
        for site in sites:
            there += [
                tuple(f"{site.name}.{v}" if i < 2 and str(v).startswith(MACHINE) else v
                      for i, v in enumerate(r))
                for r in await rows(site.common.database_url, sql)
            ]  # fmt: skip
        there.sort()
        if len(there) < len(sites) or here != there:
            out.append(f"{table}: sites {len(there)} rows, central {len(here)}: "
                       f"{sorted(set(there) ^ set(here))[:3]}")  # fmt: skip
    return out
