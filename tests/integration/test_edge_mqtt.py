"""The MQTT source against a real mosquitto broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from edge.agent import EdgeAgent
from edge.config import load
from services.common.config import CommonSettings
from services.ingest.app import serve as serve_ingest
from services.ingest.config import Settings as IngestSettings
from tests.conftest import eventually
from tests.helpers import stored_frames

pytestmark = pytest.mark.integration


async def test_json_messages_arrive_with_their_timestamps(
    tmp_path: Path, mosquitto: int, common: CommonSettings, running, stream_id: str
) -> None:
    path = tmp_path / "mqtt.yaml"
    path.write_text(f"""
stream_id: {stream_id}
source: {{type: mqtt, host: 127.0.0.1, port: {mosquitto}}}
poll_interval_ms: 50
frame_period_ms: 200
buffer: {{path: mqtt.sqlite}}
sensors:
  - {{id: pressure, topic: plant/press/pressure}}
  - {{id: temperature, topic: plant/press/temperature, json_key: celsius}}
""")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    agent = EdgeAgent(load(path), common)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    await asyncio.wait_for(agent.source.subscribed.wait(), 20)  # connected and subscribed
    t0 = 1_800_000_000.0
    async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
        for k in range(50):
            await client.publish(
                "plant/press/pressure",
                json.dumps({"value": 100 + k, "timestamp": t0 + k * 0.1}),
                qos=1,
            )
            await client.publish(
                "plant/press/temperature", json.dumps({"celsius": 40 + k / 10}), qos=1
            )
        await client.publish("plant/press/pressure", b"not json", qos=1)

    async def all_in() -> bool:
        frames = await stored_frames(common.database_url, stream_id)
        return sum(s.n for f in frames for s in f.series if s.sensor_id == "pressure") == 51

    try:
        await eventually(all_in, timeout=20)
    except AssertionError as exc:  # say where the samples stopped
        frames = await stored_frames(common.database_url, stream_id)
        stored = sum(s.n for f in frames for s in f.series if s.sensor_id == "pressure")
        raise AssertionError(
            f"{exc}; pressure samples stored {stored} of 51 in {len(frames)} frames; "
            f"edge buffer {agent.buffer.status()}; queued {agent.source.queue.qsize()}"
        ) from exc
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    frames = await stored_frames(common.database_url, stream_id)
    p = [s for f in frames for s in f.series if s.sensor_id == "pressure"]
    values = np.concatenate([s.values for s in p])
    stamps = np.concatenate([s.timestamps() for s in p])
    quality = np.concatenate([s.qualities() for s in p])
    good = quality == 192
    assert values[good].tolist() == [100.0 + k for k in range(50)]
    assert stamps[good][0] == 1_800_000_000_000_000_000
    assert stamps[good][-1] == 1_800_000_004_900_000_000
    assert (~good).sum() == 1  # the bad payload is kept, marked bad
    temps = np.concatenate(
        [s.values for f in frames for s in f.series if s.sensor_id == "temperature"]
    )
    assert len(temps) == 50


async def test_sparkplug_b_metrics_arrive_by_name_and_by_alias(
    tmp_path: Path, mosquitto: int, common: CommonSettings, running, stream_id: str
) -> None:
    from edge.sources import sparkplug

    path = tmp_path / "sp.yaml"
    path.write_text(f"""
stream_id: {stream_id}
source: {{type: mqtt, host: 127.0.0.1, port: {mosquitto}, sparkplug: {{group: plant, edge_node: press7}}}}
poll_interval_ms: 50
frame_period_ms: 200
buffer: {{path: sp.sqlite}}
sensors:
  - {{id: pressure, metric: Hydraulics/Pressure}}
  - {{id: speed, metric: Drive/Speed}}
""")
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    agent = EdgeAgent(load(path), common)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    await asyncio.wait_for(agent.source.subscribed.wait(), 20)
    t0 = 1_800_000_000_000  # ms
    birth = sparkplug.encode(
        [
            sparkplug.Metric("Hydraulics/Pressure", 1, t0, sparkplug.DOUBLE, 99.0),
            sparkplug.Metric("Drive/Speed", 2, t0, sparkplug.DOUBLE, 0.0),
        ],
        t0,
        0,
    )
    async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
        await client.publish("spBv1.0/plant/NBIRTH/press7", birth, qos=1)
        for k in range(1, 21):
            data = sparkplug.encode(
                [
                    sparkplug.Metric(None, 1, t0 + k * 100, sparkplug.DOUBLE, 100.0 + k),
                    sparkplug.Metric(None, 2, t0 + k * 100, sparkplug.DOUBLE, 10.0 * k),
                ],
                t0 + k * 100,
                k,
            )
            await client.publish("spBv1.0/plant/NDATA/press7", data, qos=1)
        await client.publish("spBv1.0/plant/NDATA/other-node", data, qos=1)  # not ours

    async def all_in() -> bool:
        frames = await stored_frames(common.database_url, stream_id)
        return sum(s.n for f in frames for s in f.series if s.sensor_id == "speed") == 21

    try:
        await eventually(all_in, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    frames = await stored_frames(common.database_url, stream_id)
    p = [s for f in frames for s in f.series if s.sensor_id == "pressure"]
    values = np.concatenate([s.values for s in p])
    stamps = np.concatenate([s.timestamps() for s in p])
    assert values.tolist() == [99.0] + [100.0 + k for k in range(1, 21)]
    assert stamps[-1] == (t0 + 2000) * 1_000_000


def pysparkplug():  # type: ignore[no-untyped-def]
    """The Sparkplug B encoder of another project (``make install`` adds it without its MQTT
    client's dependencies, which pin an older paho-mqtt than aiomqtt needs)."""
    import os

    try:
        import pysparkplug as psp
    except ImportError:
        reason = "pysparkplug is not installed (pip install --no-deps pysparkplug protobuf)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return psp


INTS = {  # sensor: (datatype name, values sent)
    "big": ("INT64", [-123456789012 - i for i in range(5)]),
    "extreme": ("INT64", [-(2**63), 2**63 - 1, -1, 0, 1]),
    "small": ("INT8", [-128, -5, 127, -1, 0]),
    "mid": ("INT16", [-295, -32768, 32767, -1, 0]),
    "wide": ("INT32", [-2_000_000_000, -(2**31), 2**31 - 1, -1, 0]),
    "counter": ("UINT64", [2**64 - 1, 0, 2**53, 7, 2**63]),
}


async def test_sparkplug_b_of_another_encoder_keeps_signed_and_64_bit_integers(
    tmp_path: Path, mosquitto: int, common: CommonSettings, running, stream_id: str
) -> None:
    """NBIRTH names the metrics, their datatypes and aliases; NDATA carries aliases only and
    no datatype (as pysparkplug writes it). Int64 arrived 512 off (-123456789012 as
    -123456788480), signed types came out unsigned (-295 as 65241), and the last message waited
    for a later one. At defaults: 1 s frames, 100 ms polls."""
    psp = pysparkplug()
    path = tmp_path / "spb.yaml"
    path.write_text(
        f"stream_id: {stream_id}\n"
        f"source: {{type: mqtt, host: 127.0.0.1, port: {mosquitto}, "
        "sparkplug: {group: plant, edge_node: press7}}\n"
        "buffer: {path: spb.sqlite}\nsensors:\n"
        + "".join(f"  - {{id: {sid}, metric: Ints/{sid}}}\n" for sid in INTS)
    )
    running.start(serve_ingest(IngestSettings(metrics_port=0), common, running.stop))
    agent = EdgeAgent(load(path), common)
    stop = asyncio.Event()
    task = asyncio.ensure_future(agent.run(stop))
    await asyncio.wait_for(agent.source.subscribed.wait(), 20)  # type: ignore[attr-defined]
    t0 = 1_800_000_000_000
    aliases = {sid: k + 1 for k, sid in enumerate(INTS)}
    birth = psp.NBirth(
        timestamp=t0,
        seq=0,
        metrics=tuple(
            psp.Metric(
                timestamp=t0,
                name=f"Ints/{sid}",
                datatype=getattr(psp.DataType, kind),
                value=values[0],
                alias=aliases[sid],
            )
            for sid, (kind, values) in INTS.items()
        ),
    )
    async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
        await client.publish("spBv1.0/plant/NBIRTH/press7", birth.encode(), qos=1)
        for i in range(1, 5):
            data = psp.NData(
                timestamp=t0 + i * 100,
                seq=i,
                metrics=tuple(
                    psp.Metric(
                        timestamp=t0 + i * 100,
                        name=None,
                        datatype=getattr(psp.DataType, kind),
                        value=values[i],
                        alias=aliases[sid],
                    )
                    for sid, (kind, values) in INTS.items()
                ),
            )
            await client.publish("spBv1.0/plant/NDATA/press7", data.encode(), qos=1)

    async def all_in() -> list | None:
        frames = await stored_frames(common.database_url, stream_id)
        n = sum(s.n for f in frames for s in f.series if s.sensor_id == "big")
        return frames if n == 5 else None

    try:
        # the last message goes out on the edge's clock, with no later message behind it
        frames = await eventually(all_in, timeout=30)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    for sid, (_kind, sent) in INTS.items():
        got = np.concatenate([s.values for f in frames for s in f.series if s.sensor_id == sid])
        assert got.tolist() == [float(v) for v in sent], sid


def test_check_waits_for_a_message_per_sensor_and_names_the_silent_ones(
    tmp_path: Path, mosquitto: int
) -> None:
    """``vertac edge check`` on an MQTT machine: a sensor whose device publishes shows its
    value; a sensor whose topic stays silent is named, with its topic, after --timeout."""
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO

    path = tmp_path / "mqtt-check.yaml"
    path.write_text(
        f"stream_id: mqtt-check\nsource: {{type: mqtt, host: 127.0.0.1, port: {mosquitto}}}\n"
        "buffer: {path: check.sqlite}\nsensors:\n"
        "  - {id: pressure, topic: plant/press/pressure}\n"
        "  - {id: flow, topic: plant/press/flow}\n"
    )
    done = threading.Event()

    def device() -> None:  # publishes until the check is over
        async def go() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
                while not done.is_set():
                    await client.publish("plant/press/pressure", b"123.5", qos=1)
                    await asyncio.sleep(0.1)

        asyncio.run(go())

    publisher = threading.Thread(target=device)
    publisher.start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "edge", "check", "--config", str(path),
             "--timeout", "5"],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        done.set()
        publisher.join(30)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()[1:]}
    assert rows["pressure"] == ["123.5", "good"]
    assert rows["flow"] == ["-", "NO MESSAGE on plant/press/flow in 5 s"]
