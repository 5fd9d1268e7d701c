"""Two sites and a central VerTac bus on this machine: three nats-servers, the sites leaf nodes
of central over links a test can cut. Central sources each site's streams under the site's id;
a cut link loses nothing, duplicates nothing, and the site runs on alone meanwhile.

The outage lasts ``VERTAC_TEST_FEDERATION_OUTAGE_S`` seconds (5 by default; 600 is the ten
minutes of a long outage)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js import JetStreamContext

from edge.client import ServerUnreachable, connect
from schemas import subjects
from services.common.bus import init_bus
from services.common.config import CommonSettings
from services.embedded import NatsServer, free_port
from services.federation import (
    CENTRAL_DOMAIN,
    InvalidSite,
    SiteLink,
    check_site,
    link_site,
    site_leaf_remote,
    site_stream,
)
from services.natsauth import ADMIN, url_for
from services.stack import Stack, StackOptions
from tests.conftest import eventually
from tests.link import Link

pytestmark = pytest.mark.integration
OUTAGE_S = float(os.environ.get("VERTAC_TEST_FEDERATION_OUTAGE_S", "5"))


@dataclass
class Site:
    name: str
    server: NatsServer
    link: Link
    nc: nats.NATS
    js: JetStreamContext
    sent: int = 0

    async def publish(self, kind: str, stream_id: str, n: int) -> None:
        """``n`` messages as VerTac's publishers send them (a message id each)."""
        for _ in range(n):
            self.sent += 1
            subject = {
                "samples": subjects.samples(stream_id),
                "cycles": subjects.cycles(stream_id, "completed"),
                "analysis": subjects.analysis(stream_id),
                "alerts": subjects.alerts(stream_id, "warning"),
                "registry": subjects.registry(stream_id),
            }[kind]
            ack = await self.js.publish(
                subject, f"{self.name}:{self.sent}".encode(),
                headers={subjects.HEADER_MSG_ID: f"{self.name}:{self.sent}"},
            )  # fmt: skip
            assert ack.duplicate is not True


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, JetStreamContext, list[Site]]]:
    central = NatsServer(tmp_path / "central", port=free_port(), monitor_port=free_port(),
                         domain=CENTRAL_DOMAIN, leaf_port=free_port()).start()  # fmt: skip
    sites: list[Site] = []
    cnc = await nats.connect(central.url)
    try:
        for name in ("north", "south"):
            assert central.leaf_port is not None
            link = await Link(central.leaf_port).start()
            remote = site_leaf_remote(f"nats-leaf://127.0.0.1:{link.port}")
            server = NatsServer(tmp_path / name, port=free_port(), monitor_port=free_port(),
                                domain=name, leaf_remotes=(remote,)).start()  # fmt: skip
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            # a whole site's layout; its control stream takes central's commands for it
            await init_bus(js, CommonSettings(nats_url=server.url, site=name))
            sites.append(Site(name, server, link, nc, js))
        yield central, cnc.jetstream(), sites
    finally:
        for site in sites:
            await site.nc.close()
            await site.link.close()
            site.server.stop()
        await cnc.close()
        central.stop()


async def stored(js: JetStreamContext, stream: str) -> list[tuple[str, bytes]]:
    """Every message of ``stream`` in order: (subject, data), read message by message."""
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append((msg.subject, msg.data or b""))
    return out


@pytest.mark.timeout(OUTAGE_S + 240)
async def test_central_takes_every_site_message_once_across_a_cut_link(plant) -> None:  # type: ignore[no-untyped-def]
    _, cjs, (north, south) = plant
    for site in (north, south):
        await site.publish("registry", "press-1", 1)
        await site.publish("samples", "press-1", 50)
        await site.publish("cycles", "press-1", 2)
        await site.publish("analysis", "press-1", 2)
        await site.publish("alerts", "press-1", 1)
        assert await link_site(cjs, SiteLink(site.name)) == "created"
        assert await link_site(cjs, SiteLink(site.name)) == "unchanged"

    async def caught_up(site: Site) -> bool:
        return (await cjs.stream_info(site_stream(site.name))).state.messages == site.sent

    for site in (north, south):
        await eventually(lambda s=site: caught_up(s), timeout=30)
    got = await stored(cjs, site_stream("north"))
    # under the site's id, so the two sites' press-1 never meet
    assert {s.split(".")[1] for s, _ in got} == {"north"}
    kept = {data: subject for subject, data in got}
    assert kept[b"north:1"].startswith("vertac.north.registry.press-1.")  # stored partitioned
    assert kept[b"north:2"].startswith("vertac.north.samples.press-1.")
    assert kept[b"north:52"].startswith("vertac.north.cycles.press-1.completed")

    # the link to north goes down: north runs on alone, south still reaches central
    north.link.cut()
    outage_end = asyncio.get_running_loop().time() + OUTAGE_S
    while asyncio.get_running_loop().time() < outage_end:
        await north.publish("samples", "press-1", 20)  # JetStream at the site takes every one
        await north.publish("cycles", "press-1", 1)
        await south.publish("samples", "press-1", 5)
        await asyncio.sleep(0.5)
    at_site = 0  # the site lost nothing while it was cut off
    for stream in (subjects.SAMPLES, subjects.CONTROL, subjects.CYCLES, subjects.ANALYSIS,
                   subjects.ALERTS):  # fmt: skip
        at_site += (await north.js.stream_info(stream.name)).state.messages
    assert at_site == north.sent
    await eventually(lambda: caught_up(south), timeout=30)
    lagging = (await cjs.stream_info(site_stream("north"))).state.messages
    assert lagging < north.sent, "central got north's messages through a cut link"

    north.link.restore()
    restored = asyncio.get_running_loop().time()
    await eventually(lambda: caught_up(north), timeout=120)
    took = asyncio.get_running_loop().time() - restored
    print(
        f"north: {north.sent - lagging} messages caught up in {took:.1f} s after the link came back"
    )
    got = await stored(cjs, site_stream("north"))
    # every message once, in the order the site stored each kind
    numbers = [int(data.split(b":")[1]) for _, data in got]
    assert sorted(numbers) == list(range(1, north.sent + 1))
    samples = [int(d.split(b":")[1]) for s, d in got if ".samples." in s]
    assert samples == sorted(samples)


async def test_no_live_subject_crosses_the_leaf_link(plant) -> None:  # type: ignore[no-untyped-def]
    """The link carries JetStream's API and deliveries only: central does not see a site's
    live traffic, and a site does not see another's."""
    central, _, (north, south) = plant
    seen: list[str] = []

    async def spy(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.subject)

    cnc = await nats.connect(central.url)
    await cnc.subscribe("vertac.>", cb=spy)
    await south.nc.subscribe("vertac.>", cb=spy)
    await cnc.flush()
    await south.nc.flush()
    await asyncio.sleep(1)  # interest would have crossed the links by now
    await north.publish("samples", "press-1", 5)
    await north.nc.publish(subjects.control("press-1"), b"{}")
    await cnc.publish(subjects.control("press-1"), b"{}")  # nor from central to a site
    await asyncio.sleep(1)
    assert [s for s in seen if s.startswith("vertac.samples")] == []
    assert (await north.js.stream_info(subjects.CONTROL.name)).state.messages == 1  # its own
    await cnc.close()


def test_a_site_id_is_a_token_and_a_domain() -> None:
    assert check_site("north-2") == "north-2"
    for bad in ("North", "a.b", "", "samples", "central", "x" * 33):
        with pytest.raises(InvalidSite):
            check_site(bad)


def stack_options(root: Path, name: str, **more: object) -> StackOptions:
    """The options of a ``vertac central`` or ``vertac run --site`` under ``root`` on free
    ports (only its nats-server is started by the tests)."""
    return StackOptions(data_dir=root / name, nats_port=free_port(), nats_monitor_port=free_port(),
                        pg_port=free_port(), simulate=False, **more)  # type: ignore[arg-type]  # fmt: skip


async def a_site_frame_reaches_central(central: Stack, site: Stack) -> None:
    """As the stacks' starts declare them: the site's layout, central's stream of site north;
    one frame published at the site arrives in central's stream."""
    admin = await nats.connect(
        url_for(central.nats.url, ADMIN, central.bus_users.passwords()[ADMIN])
    )
    site_admin = url_for(site.nats.url, ADMIN, site.bus_users.passwords()[ADMIN])
    snc = await nats.connect(site_admin)
    try:
        cjs = admin.jetstream()
        await init_bus(snc.jetstream(), CommonSettings(nats_url=site_admin))
        await link_site(cjs, SiteLink("north"))
        await snc.jetstream().publish(subjects.samples("sim-01"), b"frame",
                                      headers={subjects.HEADER_MSG_ID: "sim-01:1"})  # fmt: skip

        async def arrived() -> bool:
            return (await cjs.stream_info(site_stream("north"))).state.messages == 1

        await eventually(arrived, timeout=30)
    finally:
        await snc.close()
        await admin.close()


async def test_vertac_central_and_a_site_of_vertac_run_link_with_the_sites_own_sign_in(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The servers as ``vertac central --site north`` and ``vertac run --site north --central
    URL`` start them: closed buses both, the site's leaf node signed in as ``site-north`` (a
    wrong password is refused), central's stream of the site declared at start."""
    central = Stack(stack_options(tmp_path, "central", leaf_port=free_port(), sites=("north",)))
    central.start_nats()
    sites: list[Stack] = []
    try:
        assert central.options.leaf_port
        good = central.leaf_users.url("north", "127.0.0.1", central.options.leaf_port)
        wrong = good.replace(central.leaf_users.passwords()["site-north"], "guess")
        for name, url in (("north", good), ("intruder", wrong)):
            site = Stack(stack_options(tmp_path, name, site="north", central_url=url))
            site.start_nats()
            sites.append(site)
        said = capsys.readouterr().out
        assert "site          north (JetStream domain), leaf node of nats-leaf://" in said
        assert central.leaf_users.passwords()["site-north"] not in said
        assert "site north    takes leaf nodes on" in said
        await a_site_frame_reaches_central(central, sites[0])
        log = (tmp_path / "central" / "nats" / "nats-server.log").read_text()
        assert "Leafnode connection created" in log
        assert "Leafnode connection closed: Authentication Failure" in log  # the wrong password
    finally:
        for site in sites:
            site.nats.stop()
        central.nats.stop()


async def test_a_site_reaches_central_over_tls_and_checks_centrals_certificate(
    tmp_path: Path,
) -> None:
    """``vertac central --leaf-tls-cert/--leaf-tls-key`` and ``vertac run --site --central
    tls://... --central-ca``: the site's data arrives over TLS; a site that trusts another CA
    does not link (central's certificate is refused)."""
    from services.pki import make_ca, make_leaf, write_cert, write_key

    ca, ca_key = make_ca("VerTac central CA", days=1)
    cert, key = make_leaf("central", ca, ca_key, names=["localhost", "127.0.0.1"])
    other, _ = make_ca("Somebody else's CA", days=1)
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_file, other_file = write_cert(ca, pki / "ca.pem"), write_cert(other, pki / "other.pem")

    central = Stack(stack_options(tmp_path, "central", leaf_port=free_port(), sites=("north",),
                                  leaf_tls_cert=write_cert(cert, pki / "central.pem"),
                                  leaf_tls_key=write_key(key, pki / "central.key")))  # fmt: skip
    central.start_nats()
    sites: list[Stack] = []
    try:
        assert central.options.leaf_port
        url = central.leaf_users.url("north", "127.0.0.1", central.options.leaf_port)
        url = url.replace("nats-leaf://", "tls://")
        for name, trusted in (("north", ca_file), ("fooled", other_file)):
            site = Stack(stack_options(tmp_path, name, site="north", central_url=url,
                                       central_ca=trusted))  # fmt: skip
            site.start_nats()
            sites.append(site)
        await a_site_frame_reaches_central(central, sites[0])
        fooled = (tmp_path / "fooled" / "nats" / "nats-server.log").read_text()
        assert "certificate" in fooled.lower(), fooled[-2000:]
    finally:
        for site in sites:
            site.nats.stop()
        central.nats.stop()


REFUSED = (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def test_a_site_reads_nothing_of_another_site_through_central(tmp_path: Path) -> None:
    """Central, not the site, holds each site to its own data. A site that signs in with its
    own credentials but drops the deny rules of its configuration, and asks for everything,
    gets its own commands and nothing of the other site: not its stream at central, not its
    domain through central, not its deliveries, not central's subjects. Central's client port
    refuses its credentials: they sign in a leaf node only."""
    central = Stack(stack_options(tmp_path, "central", leaf_port=free_port(),
                                  sites=("north", "south")))  # fmt: skip
    central.start_nats()
    port = central.options.leaf_port
    assert port
    south = Stack(stack_options(tmp_path, "south", site="south",
                                central_url=central.leaf_users.url("south", "127.0.0.1", port)))  # fmt: skip
    south.start_nats()
    # north as a site could run it: its sign-in, none of the remote's deny rules
    rogue_remote = json.dumps({"url": central.leaf_users.url("north", "127.0.0.1", port)})
    rogue = NatsServer(tmp_path / "rogue", port=free_port(), monitor_port=free_port(),
                       domain="north", leaf_remotes=(rogue_remote,)).start()  # fmt: skip
    admin = await nats.connect(
        url_for(central.nats.url, ADMIN, central.bus_users.passwords()[ADMIN])
    )
    south_url = url_for(south.nats.url, ADMIN, south.bus_users.passwords()[ADMIN])
    snc = await nats.connect(south_url)
    # replies under $JSC.R, which central does send to a site: a refusal is the permission's
    rnc = await nats.connect(rogue.url, inbox_prefix=b"$JSC.R")
    try:
        cjs = admin.jetstream()
        await init_bus(snc.jetstream(), CommonSettings(nats_url=south_url, site="south"))
        await init_bus(rnc.jetstream(), CommonSettings(nats_url=rogue.url, site="north"))
        for site in ("north", "south"):
            await link_site(cjs, SiteLink(site))
        seen: list[bytes] = []

        async def spy(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.subject.encode() + b" " + (msg.data or b""))

        await rnc.subscribe(">", cb=spy)  # everything that reaches north's server
        await rnc.flush()
        with pytest.raises(ServerUnreachable, match=r"[Aa]uthorization"):
            await connect(CommonSettings(nats_url=url_for(
                central.nats.url, "site-north", central.leaf_users.passwords()["site-north"]
            )), "a site at the client port")  # fmt: skip
        # its own traffic still flows: its data to central, central's commands to it
        await rnc.jetstream().publish(subjects.cycles("m1", "completed"), b"north-own")
        await admin.jetstream().publish("vertac.north.control.m1", b"north-command")
        # south's data, a command for south and central's own traffic: none may reach north
        await snc.jetstream().publish(subjects.cycles("m1", "completed"), b"south-secret")
        await admin.jetstream().publish("vertac.south.control.m1", b"south-command-secret")
        await admin.publish(subjects.samples("central-own"), b"central-secret")

        async def arrived() -> bool:
            north_in = (await cjs.stream_info(site_stream("north"))).state.messages
            south_in = (await cjs.stream_info(site_stream("south"))).state.messages
            commands = await rnc.jetstream().stream_info(
                subjects.CONTROL.name, subjects_filter=f"{subjects.PREFIX}.control.>"
            )
            return min(north_in, south_in, commands.state.messages) >= 1

        await eventually(arrived, timeout=30)
        # asking: central's stream of south, south's domain, a consumer of south's stream
        # delivered to north's own commands prefix, central's API from the client port
        via_central = rnc.jetstream(domain=CENTRAL_DOMAIN, timeout=2)
        # the path is open: its own commands stream at central answers
        assert (await via_central.stream_info("VERTAC_SITE_north_COMMANDS")).state.messages == 1
        steal = json.dumps({"stream_name": site_stream("south"), "config": {
            "deliver_subject": "vertac-site.north.commands.steal", "ack_policy": "none"}})  # fmt: skip
        probes = [
            via_central.stream_info(site_stream("south")),
            via_central.get_msg(site_stream("south"), 1),
            via_central.get_last_msg(
                site_stream("south"), "vertac.south.cycles.m1.completed", direct=True
            ),
            via_central.stream_info("VERTAC_SITE_south_COMMANDS"),
            rnc.jetstream(domain="south", timeout=2).stream_info(subjects.CYCLES.name),
            rnc.request(
                f"$JS.{CENTRAL_DOMAIN}.API.CONSUMER.CREATE.{site_stream('south')}",
                steal.encode(),
                timeout=2,
            ),
        ]
        results = await asyncio.gather(*probes, return_exceptions=True)
        for probe, result in enumerate(results):
            assert isinstance(result, REFUSED), f"probe {probe} was answered: {result!r}"
        await rnc.flush()
        leaked = [m for m in seen if b"secret" in m]
        assert leaked == [], leaked
        assert any(b"north-command" in m for m in seen)  # the spy did see what is north's
    finally:
        for nc in (rnc, snc, admin):
            await nc.close()
        rogue.stop()
        south.nats.stop()
        central.nats.stop()
