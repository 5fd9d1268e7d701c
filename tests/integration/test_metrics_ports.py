"""Replicas of a service on one host each serve /metrics: a taken port moves up by 100."""

from __future__ import annotations

import socket
import urllib.request

from services.common.metrics import REPLICA_PORT_STEP, Metrics
from services.embedded import free_port


def test_a_second_replica_serves_its_metrics_a_step_up_and_says_so(caplog) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    while port + 2 * REPLICA_PORT_STEP > 65535:
        port = free_port()
    first, second = Metrics("cycles"), Metrics("cycles")
    assert first.serve("127.0.0.1", port) == port
    assert second.serve("127.0.0.1", port) == port + REPLICA_PORT_STEP
    assert any("metrics port in use" in r.getMessage() for r in caplog.records)
    for p in (port, port + REPLICA_PORT_STEP):
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10) as answer:
            assert b"vertac_" in answer.read()


def test_no_free_port_in_the_range_leaves_metrics_off_and_the_service_up(caplog) -> None:  # type: ignore[no-untyped-def]
    held = []
    port = free_port()
    try:
        for k in range(10):
            s = socket.socket()
            s.bind(("127.0.0.1", port + k * REPLICA_PORT_STEP))
            s.listen()
            held.append(s)
    except OSError:  # a port of the range taken by someone else: it is taken either way
        pass
    try:
        assert Metrics("ingest").serve("127.0.0.1", port) in (0, *(
            port + k * REPLICA_PORT_STEP for k in range(len(held), 10)))  # fmt: skip
        if len(held) == 10:
            assert any("metrics not served" in r.getMessage() for r in caplog.records)
    finally:
        for s in held:
            s.close()
