"""The closed bus: a real nats-server with the users and permissions ``vertac run`` writes. An
edge publishes its own stream through the real edge code, and nothing else. A service may not
delete streams, publishes only its own subjects and reads only its own replies. A stranger
cannot connect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import pytest

from edge.client import ServerUnreachable, connect, open_client
from edge.registry_client import RegistryRefused, lookup, registry_call
from edge.run import SimulateOptions, simulate
from edge.simulator import build_machine
from schemas import subjects
from schemas.messages import RegistryRequest
from services.common.config import CommonSettings
from services.common.runtime import open_bus
from services.embedded import NatsServer, free_port
from services.ingest.registry import RegistryResponder
from services.natsauth import BusUsers, edge_user, url_for
from tests.conftest import eventually

pytestmark = pytest.mark.integration


async def _count(js, subject: str) -> int:  # type: ignore[no-untyped-def]
    # stored under a partition suffix: vertac.samples.<stream>.<partition>
    info = await js.stream_info(subjects.SAMPLES.name, subjects_filter=f"{subject}.>")
    return sum((info.state.subjects or {}).values())


REFUSED = (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def _all_refused(*calls) -> None:  # type: ignore[no-untyped-def]
    """Each call is refused (times out, or no one answers); they wait side by side."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        assert isinstance(result, REFUSED), f"call {i} was not refused: {result!r}"


async def test_an_edge_publishes_its_own_stream_only_and_strangers_stay_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = BusUsers(tmp_path / "nats.secrets", tmp_path / "nats.conf")
    passwords = users.ensure(edge_user("press-a"))
    server = NatsServer(tmp_path / "nats", port=free_port(), monitor_port=free_port(),
                        config=users.config_file).start()  # fmt: skip
    try:

        def as_user(user: str) -> CommonSettings:
            return CommonSettings(nats_url=url_for(server.url, user, passwords[user]))

        admin = await open_bus(as_user("admin"), "vertac-test-admin")  # declares the layout
        # the registry service, as the ingest user runs it
        registry_bus = await open_client(as_user("ingest"), "vertac-test-registry")
        responder = RegistryResponder(
            registry_bus.js,
            await registry_bus.js.key_value(subjects.KV_STREAMS),
            await registry_bus.js.key_value(subjects.KV_SEQ),
        )
        stop_registry = asyncio.Event()
        serving = asyncio.ensure_future(responder.serve(registry_bus.nc, stop_registry))
        # the edge, through the same code an edge machine runs
        edge = await open_client(as_user("edge-press-a"), "vertac-edge-press-a")
        model = build_machine(stream_id="press-a", sensors=2, rate_hz=50, cycle_s=2)
        await simulate(edge, model, SimulateOptions(speed=0, frames=5))
        assert await _count(admin.js, subjects.samples("press-a")) == 5
        record = await lookup(await admin.js.key_value(subjects.KV_STREAMS), "press-a")
        assert record is not None and record.device_name == model.registration().device_name
        # it registers through the service only: never for another stream ...
        spoof = model.registration().model_copy(update={"stream_id": "press-b"})
        with pytest.raises(RegistryRefused, match="not this subject's stream"):
            await registry_call(edge, "press-a", RegistryRequest(op="register", registration=spoof))
        # ... nor writes or reads a bucket itself (not even its own key)
        calls = []
        for subject, body in (
            (f"$KV.{subjects.KV_STREAMS}.press-a", b"not json"),
            (f"$KV.{subjects.KV_SEQ}.press-a", b"0"),
            (subjects.register_request("press-b"), b"{}"),
            (subjects.registry("press-a"), b"{}"),
            (f"$JS.API.STREAM.MSG.GET.KV_{subjects.KV_STREAMS}",
             b'{"last_by_subj": "$KV.vertac_streams.sim-01"}'),
            (f"$JS.API.DIRECT.GET.KV_{subjects.KV_STREAMS}.$KV.{subjects.KV_STREAMS}.press-a", b""),
        ):  # fmt: skip
            calls.append(edge.nc.request(subject, body, timeout=2))
        await _all_refused(*calls)
        record = await lookup(await admin.js.key_value(subjects.KV_STREAMS), "press-a")
        assert record is not None and record.stream_id == "press-a"
        stop_registry.set()
        await serving
        await registry_bus.close()
        # ... but not another stream's samples, nor commands
        await _all_refused(*(
            edge.js.publish(subject, b"forged", timeout=2)
            for subject in (subjects.samples("press-b"), subjects.control("press-a"))
        ))  # fmt: skip
        assert await _count(admin.js, subjects.samples("press-b")) == 0
        # and the edge's log says why, once per refusal
        await eventually(lambda: asyncio.sleep(0, any(
            "the bus refused this" in r.getMessage() and r.levelname == "ERROR"
            for r in caplog.records
        )))  # fmt: skip
        # it may not read the bus: a subscription to vertac.> is refused and delivers nothing
        errors: list[str] = []
        got: list[object] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        async def on_message(msg: object) -> None:
            got.append(msg)

        spy = await nats.connect(as_user("edge-press-a").nats_url, error_cb=on_error)
        await spy.subscribe("vertac.>", cb=on_message)
        await spy.flush()
        await admin.nc.publish(subjects.control("press-a"), b"{}")
        await eventually(
            lambda: asyncio.sleep(0, any("permissions violation" in e.lower() for e in errors))
        )
        assert got == []
        await spy.close()
        # nor delete a stream; nor may a service
        deleters = [
            await open_client(as_user(user), f"vertac-test-{user}")
            for user in ("edge-press-a", "ingest")
        ]
        await _all_refused(
            *(asyncio.wait_for(b.js.delete_stream("VERTAC_DLQ"), 5) for b in deleters)
        )
        for deleter in deleters:
            await deleter.close()
        assert (await admin.js.stream_info("VERTAC_DLQ")).config.name == "VERTAC_DLQ"
        # each service its own subjects: the gateway sends commands; ingest may not, nor
        # write cycle events, another service's dead letters or a bucket it only reads
        gateway = await open_bus(as_user("gateway"), "vertac-test-gateway")  # layout: info only
        ack = await gateway.js.publish(subjects.control("press-a"), b"{}")
        assert ack.stream == "VERTAC_CONTROL"
        # and asks the owners to change settings: it may not write their buckets itself
        calls = []
        for subject in (
            f"$KV.{subjects.KV_ALERT_RULES}.press-a.r1",
            f"$KV.{subjects.KV_CYCLE_CONFIG}.press-a",
            f"$KV.{subjects.KV_STREAMS}.press-a",
        ):
            calls.append(gateway.js.publish(subject, b"{}", timeout=2))
        await _all_refused(*calls)
        await gateway.close()
        ingest = await open_bus(as_user("ingest"), "vertac-test-ingest")
        calls = []
        for subject in (
            subjects.control("press-a"),
            subjects.cycles("press-a", "started"),
            subjects.dead_letter("cycles"),
            f"$KV.{subjects.KV_ALERT_RULES}.press-a.r1",
        ):
            calls.append(ingest.js.publish(subject, b"{}", timeout=2))
        await _all_refused(*calls)
        await ingest.close()
        # no one reads another's replies: only its own inbox is open to a user
        for user in ("ingest", "edge-press-a"):
            errors.clear()
            snoop = await nats.connect(as_user(user).nats_url, error_cb=on_error)
            await snoop.subscribe("_INBOX.>", cb=on_message)
            await snoop.flush()
            await eventually(
                lambda: asyncio.sleep(0, any("_inbox" in e.lower() for e in errors)), timeout=5
            )
            await snoop.close()
        await admin.js.stream_info("VERTAC_DLQ")  # a request: its reply reached no one else
        assert got == []
        await edge.close()
        await admin.close()
        # strangers: no user, a wrong password
        for url in (server.url, url_for(server.url, "ingest", "guess")):
            with pytest.raises(ServerUnreachable, match=r"[Aa]uthorization"):
                await connect(CommonSettings(nats_url=url), "stranger")
    finally:
        server.stop()


async def test_a_service_before_bus_init_says_only_the_admin_may_declare_the_layout(
    tmp_path: Path,
) -> None:
    users = BusUsers(tmp_path / "nats.secrets", tmp_path / "nats.conf")
    passwords = users.ensure()
    server = NatsServer(tmp_path / "nats", port=free_port(), monitor_port=free_port(),
                        config=users.config_file).start()  # fmt: skip
    try:
        ingest = CommonSettings(nats_url=url_for(server.url, "ingest", passwords["ingest"]))
        with pytest.raises(ServerUnreachable, match=r"only its admin may.*vertac bus init"):
            await open_bus(ingest, "vertac-ingest")
        admin = await open_bus(
            CommonSettings(nats_url=url_for(server.url, "admin", passwords["admin"])), "t"
        )
        await admin.close()
        bus = await open_bus(ingest, "vertac-ingest")  # declared now: it only looks
        await bus.close()
    finally:
        server.stop()
