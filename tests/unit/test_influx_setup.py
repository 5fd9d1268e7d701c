"""``vertac influx init``: the requests it makes, as InfluxDB 2's HTTP API describes them
(/api/v2/orgs, /api/v2/buckets, /api/v2/tasks), against a small in-process server that keeps
buckets and tasks the way InfluxDB does; and the Flux task it installs."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from services.ingest.influx_setup import (
    TASK_NAME,
    InfluxPlan,
    InfluxSetupError,
    apply,
    flux_task,
)

PLAN = InfluxPlan(org="plant", bucket="vertac", rollup_bucket="vertac_1m", raw_days=7,
                  rollup_days=90)  # fmt: skip


class Influx:
    def __init__(self) -> None:
        self.orgs = [{"id": "0123456789abcdef", "name": "plant"}]
        self.buckets: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.tokens: set[str] = set()


@pytest.fixture
def influx() -> Iterator[tuple[str, Influx]]:
    state = Influx()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            state.calls.append((method, url.path))
            state.tokens.add(self.headers.get("Authorization", ""))
            parts = url.path.strip("/").split("/")
            if parts[:2] != ["api", "v2"]:
                return self._send(404, {"code": "not found", "message": url.path})
            kind, ident = parts[2], (parts[3] if len(parts) > 3 else None)
            if method == "GET" and kind == "orgs":
                return self._send(
                    200, {"orgs": [o for o in state.orgs if o["name"] == q.get("org")]}
                )
            if method == "GET" and kind == "buckets":
                found = [b for b in state.buckets.values() if b["name"] == q.get("name")]
                return self._send(200, {"buckets": found})
            if method == "POST" and kind == "buckets":
                body = self._body()
                assert body["orgID"] == state.orgs[0]["id"]
                assert [r["type"] for r in body["retentionRules"]] == ["expire"]
                bucket = {**body, "id": uuid.uuid4().hex[:16]}
                state.buckets[bucket["id"]] = bucket
                return self._send(201, bucket)
            if method == "PATCH" and kind == "buckets" and ident in state.buckets:
                body = self._body()
                state.buckets[ident]["retentionRules"] = body["retentionRules"]
                return self._send(200, state.buckets[ident])
            if method == "GET" and kind == "tasks":
                if q.get("after"):
                    return self._send(200, {"tasks": []})
                found = [t for t in state.tasks.values() if t["name"] == q.get("name")]
                return self._send(200, {"tasks": found})
            if method == "POST" and kind == "tasks":
                body = self._body()
                assert body["orgID"] == state.orgs[0]["id"] and body["status"] == "active"
                task = {**body, "id": uuid.uuid4().hex[:16], "name": TASK_NAME, "every": "1m"}
                state.tasks[task["id"]] = task
                return self._send(201, task)
            if method == "PATCH" and kind == "tasks" and ident in state.tasks:
                state.tasks[ident].update(self._body())
                return self._send(200, state.tasks[ident])
            return self._send(404, {"code": "not found", "message": f"{method} {url.path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()


def test_init_creates_both_buckets_and_the_task_then_changes_nothing(influx) -> None:
    url, state = influx
    done = apply(PLAN, url, "s3cret")
    assert done == [
        "created bucket 'vertac', kept 7 d",
        "created bucket 'vertac_1m', kept 90 d",
        f"created task {TASK_NAME!r}",
    ]
    kept = {b["name"]: b["retentionRules"][0]["everySeconds"] for b in state.buckets.values()}
    assert kept == {"vertac": 7 * 86400, "vertac_1m": 90 * 86400}
    (task,) = state.tasks.values()
    assert task["flux"] == flux_task(PLAN)
    assert state.tokens == {"Token s3cret"}
    first = len(state.calls)
    again = apply(PLAN, url, "s3cret")
    assert again == [
        "bucket 'vertac': already kept 7 d",
        "bucket 'vertac_1m': already kept 90 d",
        f"task {TASK_NAME!r}: already up to date",
    ]
    assert [c for c in state.calls[first:] if c[0] != "GET"] == []


def test_init_updates_a_changed_retention_and_an_old_task(influx) -> None:
    url, state = influx
    apply(PLAN, url, "")
    (task,) = state.tasks.values()
    task["flux"] = "old"
    shorter = dataclasses.replace(PLAN, raw_days=3)
    done = apply(shorter, url, "")
    assert done == [
        "bucket 'vertac': retention set to 3 d",
        "bucket 'vertac_1m': already kept 90 d",
        f"task {TASK_NAME!r}: brought up to date",
    ]
    assert task["flux"] == flux_task(shorter)


def test_an_unknown_organization_and_an_unreachable_server_are_named(influx) -> None:
    url, _ = influx
    with pytest.raises(InfluxSetupError, match="organization 'other' does not exist"):
        apply(InfluxPlan("other", "b", "b_1m", 7, 90), url, "")
    with pytest.raises(InfluxSetupError, match="unreachable"):
        apply(PLAN, "http://127.0.0.1:9", "")


def test_the_flux_task_reads_the_sink_bucket_and_writes_every_aggregate() -> None:
    flux = flux_task(InfluxPlan('pl"ant', "raw", "agg", 7, 90))
    assert 'from(bucket: "raw")' in flux and 'to(bucket: "agg", org: "pl\\"ant")' in flux
    assert 'r._measurement == "sensor_readings"' in flux
    for name in ("min", "max", "mean", "last", "count", "bad_count"):
        assert f'rollup(name: "{name}")' in flux
    assert "every: 1m" in flux
