"""Who may do what: tokens, roles, sign-in, the audit trail, auth off; against a real gateway,
nats-server and PostgreSQL at default settings (auth on)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import httpx
import pytest
import uvicorn
import websockets

from services.common.config import CommonSettings
from services.embedded import free_port
from tests.conftest import REPO, GatewayUrl, admin_token

pytestmark = pytest.mark.integration
# POST /api/auth/session signs in; the API documents are public, as /openapi.json is
PUBLIC = {"/api/health", "/api/auth/session", "/api/asyncapi.json"}
SAMPLE_PATH = {
    "stream_id": "s-1", "cycle_id": "s-1-1", "rule_id": "r1", "alert_id": "s-1.r1.1",
    "dataset": "d1", "version": "1", "token_id": "0123456789abcdef",
}  # fmt: skip


def registration(stream_id: str) -> dict:
    return {
        "device_name": "Press 7",
        "stream_id": stream_id,
        "sensors": [{"id": "p", "type": "pressure", "unit": "bar", "rate_hz": 10}],
    }


def batch(stream_id: str) -> dict:
    return {"stream_id": stream_id, "samples": [{"timestamp": 1.0e9, "values": {"p": 1.0}}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_but_health_refuses_an_anonymous_caller(gateway: GatewayUrl) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as anonymous:
        spec = (await anonymous.get("/openapi.json")).json()
        checked = []
        for path, methods in spec["paths"].items():
            if path in PUBLIC:
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH[m.group(1)], path)
            for method in methods:
                r = await anonymous.request(method.upper(), url, json={})
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["details"][0]["field"] == "Authorization"
                checked.append((method, path))
        assert len(checked) >= 39  # every route of the document
        for path in ("/metrics", "/api/live/ws/stream/s-1"):
            assert (await anonymous.get(path)).status_code in (401, 403, 404), path
        assert (await anonymous.get("/api/health")).status_code == 200
        # a made-up token is refused the same way
        r = await anonymous.get("/api/live/streams", headers=bearer("vtk_" + "0" * 16 + "_x" * 1))
        assert r.status_code == 401
    ws = gateway.replace("http", "ws") + "/api/live/ws/stream/s-1"
    async with websockets.connect(ws) as socket:
        refused = json.loads(await socket.recv())
        assert refused["type"] == "error" and "sign in" in refused["data"]["error"]
        await socket.wait_closed()
        assert socket.close_code == 1008


async def test_roles_allow_what_they_name_and_refuse_the_rest(
    gateway: GatewayUrl, common: CommonSettings, stream_id: str
) -> None:
    url = common.database_url
    viewer = await admin_token(url, "line-3-hmi", "viewer")
    operator = await admin_token(url, "anna", "operator")
    edge = await admin_token(url, "press-edge", "edge", [stream_id])
    other = f"{stream_id}-other"
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        admin = gateway.headers
        assert (await client.post("/api/live/register", json=registration(other),
                                  headers=admin)).status_code == 201  # fmt: skip
        # an edge registers and posts its own stream only, and reads nothing
        r = await client.post("/api/live/register", json=registration(stream_id),
                              headers=bearer(edge))  # fmt: skip
        assert r.status_code == 201, r.text
        assert (await client.post("/api/live/batch", json=batch(stream_id),
                                  headers=bearer(edge))).status_code == 200  # fmt: skip
        r = await client.post("/api/live/batch", json=batch(other), headers=bearer(edge))
        assert r.status_code == 403 and "may not post" in r.json()["error"], r.text
        r = await client.post("/api/live/register", json=registration(other), headers=bearer(edge))
        assert r.status_code == 403, r.text
        assert (await client.get("/api/live/streams", headers=bearer(edge))).status_code == 403
        # a viewer reads and changes nothing
        r = await client.get("/api/live/streams", headers=bearer(viewer))
        assert r.status_code == 200 and {s["stream_id"] for s in r.json()} >= {stream_id, other}
        for method, path, body in (
            ("POST", f"/api/live/cycle/start?stream_id={stream_id}", None),
            ("POST", "/api/live/batch", batch(stream_id)),
            ("PUT", f"/api/live/stream/{stream_id}/alert-rules/hi",
             {"kind": "limit", "sensor_id": "p", "hi": 5}),
            ("PUT", f"/api/live/stream/{stream_id}/cycle-config", {"trigger": "manual"}),
            ("POST", "/api/auth/tokens", {"name": "x", "role": "admin"}),
            ("GET", "/api/audit", None),
        ):  # fmt: skip
            r = await client.request(method, path, json=body, headers=bearer(viewer))
            assert r.status_code == 403, (method, path, r.text)
            assert "role" in r.json()["error"]
        # an operator runs cycles but sets no rules
        r = await client.post(f"/api/live/cycle/start?stream_id={stream_id}",
                              headers=bearer(operator))  # fmt: skip
        assert r.status_code == 202, r.text
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/hi",
                             json={"kind": "limit", "sensor_id": "p", "hi": 5},
                             headers=bearer(operator))  # fmt: skip
        assert r.status_code == 403
        # an admin does
        r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/hi",
                             json={"kind": "limit", "sensor_id": "p", "hi": 5}, headers=admin)  # fmt: skip
        assert r.status_code == 200, r.text
        # WebSocket: a viewer watches but may not command; an operator may
        ws = gateway.replace("http", "ws") + f"/api/live/ws/stream/{stream_id}"
        async with websockets.connect(ws, additional_headers=bearer(viewer)) as socket:
            assert json.loads(await socket.recv())["type"] == "ready"
            await socket.send(json.dumps({"type": "cycle_stop"}))
            while (msg := json.loads(await socket.recv()))["type"] != "error":
                pass
            assert "needs role operator" in msg["data"]["error"]
        async with websockets.connect(ws + f"?access_token={operator}") as socket:
            assert json.loads(await socket.recv())["type"] == "ready"
            await socket.send(json.dumps({"type": "cycle_stop"}))
            while (msg := json.loads(await socket.recv()))["type"] not in ("command_ack", "error"):
                pass
            assert msg["type"] == "command_ack", msg
        async with websockets.connect(ws, additional_headers=bearer(edge)) as socket:
            assert "role viewer" in json.loads(await socket.recv())["data"]["error"]
        # the audit trail names who did what
        r = await client.get("/api/audit", headers=admin)
        assert r.status_code == 200
        done = [(e["actor"], e["action"], e["target"]) for e in r.json()]
        assert ("anna", "cycle.start", stream_id) in done
        assert ("anna", "cycle.stop", stream_id) in done
        assert ("test-admin", "alert_rule.put", f"{stream_id}/hi") in done
        assert ("press-edge", "stream.register", stream_id) in done
        rule = next(e for e in r.json() if e["action"] == "alert_rule.put")
        assert rule["before"] is None and rule["after"]["hi"] == 5
        r = await client.get("/api/audit", params={"action": "cycle.*", "actor": "anna"},
                             headers=admin)  # fmt: skip
        assert {e["action"] for e in r.json()} == {"cycle.start", "cycle.stop"}


async def test_tokens_are_made_listed_and_revoked_and_a_browser_signs_in_with_one(
    gateway: GatewayUrl,
) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        r = await client.post("/api/auth/tokens", json={"name": "grafana", "role": "viewer"},
                              headers=gateway.headers)  # fmt: skip
        assert r.status_code == 201, r.text
        made = r.json()
        token, token_id = made["token"], made["info"]["token_id"]
        assert token.startswith(f"vtk_{token_id}_")
        r = await client.get("/api/auth/tokens", headers=gateway.headers)
        listed = {t["token_id"]: t for t in r.json()}
        assert listed[token_id]["role"] == "viewer" and "token" not in listed[token_id]
        r = await client.post("/api/auth/tokens", json={"name": "e", "role": "edge"},
                              headers=gateway.headers)  # fmt: skip
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.streams"
        # sign-in: the cookie alone then authenticates, HttpOnly and SameSite=Strict
        r = await client.post("/api/auth/session", json={"token": token})
        assert r.status_code == 200 and r.json()["name"] == "grafana"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        me = await client.get("/api/auth/me")
        assert me.status_code == 200 and me.json()["role"] == "viewer", me.text
        assert (await client.delete("/api/auth/session")).status_code == 204
        client.cookies.clear()
        assert (await client.get("/api/auth/me")).status_code == 401
        r = await client.post("/api/auth/session", json={"token": token + "x"})
        assert r.status_code == 401
        # revoked: refused at once
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
        r = await client.delete(f"/api/auth/tokens/{token_id}", headers=gateway.headers)
        assert r.status_code == 204
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 401
        r = await client.delete(f"/api/auth/tokens/{token_id}", headers=gateway.headers)
        assert r.status_code == 404
        r = await client.get("/api/audit", params={"action": "token.*"}, headers=gateway.headers)
        assert [e["action"] for e in r.json()][:2] == ["token.revoke", "token.create"]


def test_the_command_line_makes_lists_and_revokes_tokens(database_url: str) -> None:
    env = {**os.environ, "VERTAC_DATABASE_URL": database_url}

    def vertac(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "auth", "token", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    made = vertac("create", "press-01-edge", "--role", "edge", "--stream", "press-01")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"vtk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token)
    token_id = token.split("_")[1]
    listed = vertac("list")
    assert token_id in listed.stdout and "press-01" in listed.stdout and token not in listed.stdout
    bad = vertac("create", "x", "--role", "edge")
    assert bad.returncode == 2 and "--stream" in bad.stderr
    bad = vertac("create", "x", "--role", "root")
    assert bad.returncode == 2 and "--role" in bad.stderr
    assert vertac("revoke", token_id).returncode == 0
    assert token_id not in vertac("list").stdout
    assert "revoked" in vertac("list", "--all").stdout
    again = vertac("revoke", token_id)
    assert again.returncode == 2 and "no active token" in again.stderr


async def test_with_auth_off_everyone_is_admin_and_the_start_warns(
    common: CommonSettings, caplog: pytest.LogCaptureFixture
) -> None:
    from services.gateway.app import build_app, uvicorn_config
    from services.gateway.config import Settings

    port = free_port()
    off = common.model_copy(update={"auth": "off"})
    with caplog.at_level("WARNING"):
        app = build_app(Settings(port=port), off)
    assert any("VERTAC_AUTH=off" in r.getMessage() for r in caplog.records)
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port))
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            assert not task.done(), "gateway did not start"
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            me = (await client.get("/api/auth/me")).json()
            assert me == {**me, "name": "anonymous", "role": "admin", "auth": False}
            assert (await client.get("/api/live/streams")).status_code == 200
            r = await client.post("/api/live/alerts/s-1.r1.1/ack", json={})
            assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.user"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
