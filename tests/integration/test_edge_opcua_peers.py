"""The OPC-UA source against an asyncua server laid out like real ones are: values that never
change, an array node, a node id and a browse path that do not exist, and endpoints that demand
signed or encrypted channels. Every setting of the source stays at its default unless a test
says why not."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from asyncua import Server, ua

from edge.agent import EdgeAgent
from edge.check import check_opcua
from edge.config import ConfigError, load
from services.common.config import CommonSettings
from services.embedded import free_port
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.helpers import stored_frames
from tests.peers import NodePeer

pytestmark = pytest.mark.integration

BAD_SENSORS = ("curve", "missing", "nowhere")


class Plc:
    """Press/Static never changes; Press/Pressure changes every 50 ms; Press/Curve is an array."""

    ns = 2  # the namespace index of the server's own nodes

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/plc/"
        self.server = Server()
        self.task: asyncio.Task[None] | None = None

    async def start(
        self, security: list[ua.SecurityPolicyType] | None = None, certs: Path | None = None
    ) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.url)
        if security is not None and certs is not None:
            server.set_security_policy(security)
            await server.load_certificate(str(certs / "server.der"))
            await server.load_private_key(str(certs / "server-key.pem"))
        ns = await server.register_namespace("urn:vertac:plc")
        press = await server.nodes.objects.add_object(ns, "Press")
        await press.add_variable(ns, "Static", 7.5)
        pressure = await press.add_variable(ns, "Pressure", 0.0)
        await press.add_variable(ns, "Curve", [1.0, 2.0, 3.0])
        await server.start()

        async def change() -> None:
            k = 0
            while True:
                k += 1
                await pressure.write_value(100.0 + k)
                await asyncio.sleep(0.05)

        self.task = asyncio.ensure_future(change())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.server.stop()


class NodeOpcUa:
    """The same nodes served by node-opcua (npm), in its own namespace, index 1."""

    ns = 1

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/plc"
        self.peer = NodePeer("opcua_server.mjs", port)

    async def start(self) -> None:
        await asyncio.to_thread(self.peer.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.peer.stop)


def machine(
    tmp_path: Path,
    stream_id: str,
    plc: Plc | NodeOpcUa,
    mode: str,
    changing: bool = True,
    security: str = "",
) -> Path:
    n = plc.ns
    sensors = [
        f'  - {{id: static, browse_path: ["{n}:Press", "{n}:Static"]}}',
        f'  - {{id: curve, browse_path: ["{n}:Press", "{n}:Curve"]}}',
        f'  - {{id: missing, node_id: "ns={n};i=999"}}',
        f'  - {{id: nowhere, browse_path: ["{n}:Press", "{n}:Nope"]}}',
    ]
    if changing:
        sensors.insert(1, f'  - {{id: pressure, browse_path: ["{n}:Press", "{n}:Pressure"]}}')
    path = tmp_path / f"{stream_id}.yaml"
    path.write_text(
        f"stream_id: {stream_id}\n"
        f'source: {{type: opcua, url: "{plc.url}", mode: {mode}{security}}}\n'
        f"buffer: {{path: {stream_id}.sqlite}}\nsensors:\n" + "\n".join(sensors) + "\n"
    )
    return path


@pytest.fixture(params=["asyncua", "node-opcua"])
async def plc(request: pytest.FixtureRequest):
    p = Plc(free_port()) if request.param == "asyncua" else NodeOpcUa(free_port())
    await p.start()
    yield p
    await p.stop()


def by_sensor(frames: list) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for sid in {s.sensor_id for f in frames for s in f.series}:
        series = [s for f in frames for s in f.series if s.sensor_id == sid]
        out[sid] = (
            np.concatenate([s.timestamps() for s in series]),
            np.concatenate([s.values for s in series]),
            np.concatenate([s.qualities() for s in series]),
        )
    return out


def assert_bad_sensors_named(caplog: pytest.LogCaptureFixture) -> None:
    named = {
        r.__dict__.get("sensor"): r.__dict__.get("reason")
        for r in caplog.records
        if r.getMessage() == "opc-ua sensor cannot be read; it reads bad"
    }
    assert set(named) == set(BAD_SENSORS), named
    assert "array of 3 values" in named["curve"]
    assert "BadNodeIdUnknown" in named["missing"]
    assert "BadNoMatch" in named["nowhere"] and ":Nope" in named["nowhere"]


async def test_subscribe_mode_with_static_and_bad_nodes_publishes_on_time_at_defaults(
    tmp_path: Path,
    plc: Plc | NodeOpcUa,
    common: CommonSettings,
    running,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Values that never change: one sample each, frames every second (not one at the end),
    and the silent subscription is left alone (it was recreated every ~11 s, adding duplicates)."""
    caplog.set_level(logging.INFO)
    logging.getLogger("asyncua").setLevel(logging.NOTSET)  # as in a new process
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    config = load(machine(tmp_path, stream_id, plc, "subscribe", changing=False))
    assert config.source.watchdog_s == 10 and config.frame_period_ms == 1000  # type: ignore[union-attr]
    agent = EdgeAgent(config, common)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.ensure_future(agent.run(stop))
    try:
        # a frame is stored while the agent runs: the static value went out on the edge's clock
        first = await eventually(lambda: stored_frames(common.database_url, stream_id), timeout=30)
        first_after_s = time.monotonic() - started
        # past the watchdog's period, with the subscription silent all along
        await eventually(lambda: _after(started + config.source.watchdog_s + 3), timeout=60)  # type: ignore[union-attr]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    frames = await stored_frames(common.database_url, stream_id)
    sensors = by_sensor(frames)
    assert len(sensors["static"][1]) == 1 and sensors["static"][1][0] == 7.5
    assert sensors["static"][2].tolist() == [192]
    assert agent.source.recreated == 0  # type: ignore[attr-defined]
    for sid in BAD_SENSORS:
        assert set(sensors[sid][2].tolist()) == {0}
        assert np.isnan(sensors[sid][1]).all()
    assert first and first_after_s < 15
    assert_bad_sensors_named(caplog)
    # asyncua's own INFO lines (one per notification, 1.4 MB in 143 s) are quiet by default
    assert not [r for r in caplog.records if r.name.startswith("asyncua") and r.levelno < 30]


async def _after(moment: float) -> bool:
    return time.monotonic() >= moment


async def test_poll_mode_reads_good_sensors_beside_bad_ones_and_drops_repeats(
    tmp_path: Path,
    plc: Plc,
    common: CommonSettings,
    running,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An array node once stopped the whole agent in poll mode; and every poll re-stored the
    static value with its old timestamp and became a frame of its own (6.6 frames/s)."""
    caplog.set_level(logging.INFO, logger="edge")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    config = load(machine(tmp_path, stream_id, plc, "poll"))
    agent = EdgeAgent(config, common)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.ensure_future(agent.run(stop))
    try:

        async def enough() -> bool:
            frames = await stored_frames(common.database_url, stream_id)
            return sum(s.n for f in frames for s in f.series if s.sensor_id == "pressure") >= 30

        await eventually(enough, timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    elapsed = time.monotonic() - started
    frames = await stored_frames(common.database_url, stream_id)
    sensors = by_sensor(frames)
    t, v, q = sensors["pressure"]
    assert set(q.tolist()) == {192} and v.min() > 100 and np.all(np.diff(t) > 0)
    assert len(sensors["static"][1]) == 1  # read on every poll, stored once
    # frames cover frame_period_ms (1 s) each: at most one a second, and one at the stop
    assert len(frames) <= elapsed / (config.frame_period_ms / 1000) + 2, (len(frames), elapsed)
    for sid in BAD_SENSORS:
        assert set(sensors[sid][2].tolist()) == {0}
    assert_bad_sensors_named(caplog)


async def test_check_names_each_bad_sensor_and_its_reason(tmp_path: Path, plc: Plc) -> None:
    config = load(machine(tmp_path, "plc-check", plc, "subscribe"))
    rows = {r.sensor: r for r in await check_opcua(config, config.source)}  # type: ignore[arg-type]
    assert rows["static"].value == 7.5 and rows["static"].state == "good"
    assert rows["pressure"].value > 100
    assert "array of 3 values" in rows["curve"].state
    assert "BadNodeIdUnknown" in rows["missing"].state
    assert "BadNoMatch" in rows["nowhere"].state


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server certificate and a client certificate whose application URI is our own."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = tmp_path_factory.mktemp("opcua-certs")

    async def make() -> None:
        host = socket.gethostname()
        await setup_self_signed_certificate(
            folder / "server-key.pem",
            folder / "server.der",
            "urn:vertac:test:plc",
            host,
            [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": "plc"},
        )
        await setup_self_signed_certificate(
            folder / "edge-key.pem",
            folder / "edge.der",
            "urn:vertac:edge:press-07",
            host,
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "edge"},
        )

    asyncio.run(make())
    return folder


@pytest.mark.parametrize(
    ("mode", "policy"),
    [
        ("Sign", ua.SecurityPolicyType.Basic256Sha256_Sign),
        ("SignAndEncrypt", ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt),
    ],
)
async def test_a_server_that_demands_security_is_read_with_our_certificate(
    tmp_path: Path, certs: Path, mode: str, policy: ua.SecurityPolicyType
) -> None:
    plc = Plc(free_port())
    await plc.start(security=[policy], certs=certs)
    try:
        security = (
            f", security: {{policy: Basic256Sha256, mode: {mode}, certificate: {certs / 'edge.der'},"
            f" private_key: {certs / 'edge-key.pem'}, application_uri: 'urn:vertac:edge:press-07'}}"
        )
        config = load(machine(tmp_path, "plc-secure", plc, "subscribe", security=security))
        rows = {r.sensor: r for r in await check_opcua(config, config.source)}  # type: ignore[arg-type]
        assert rows["static"].state == "good" and rows["static"].value == 7.5
        # without security the server turns the client away
        plain = load(machine(tmp_path, "plc-plain", plc, "subscribe"))
        with pytest.raises(Exception, match="OPC-UA server"):
            await check_opcua(plain, plain.source)  # type: ignore[arg-type]
    finally:
        await plc.stop()


def test_security_without_its_files_is_refused_at_load(tmp_path: Path) -> None:
    plc = Plc(4840)
    no_files = machine(
        tmp_path, "plc-a", plc, "poll", security=", security: {policy: Basic256Sha256}"
    )
    with pytest.raises(ConfigError, match="needs certificate and private_key files"):
        load(no_files)
    absent = machine(
        tmp_path,
        "plc-b",
        plc,
        "poll",
        security=", security: {policy: Basic256Sha256, certificate: edge.der, private_key: edge-key.pem}",
    )
    with pytest.raises(ConfigError, match=r"source.security.certificate: no such file: .*edge.der"):
        load(absent)
