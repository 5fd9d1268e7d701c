"""Alert notifications to a real HTTP server (signed webhook) and a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from aiosmtpd.controller import Controller

from services.alerts.app import serve as serve_alerts
from services.alerts.config import Settings as AlertsSettings
from services.alerts.notify import Budget, signature
from services.common.config import CommonSettings
from services.embedded import free_port
from tests.conftest import GatewayUrl, eventually

pytestmark = pytest.mark.integration
SECRET = "s3cret"


class Receiver(BaseHTTPRequestHandler):
    posts: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.posts.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def webhook_server():
    Receiver.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def smtp_server():
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


async def test_an_alert_is_posted_signed_and_mailed(
    gateway: GatewayUrl,
    common: CommonSettings,
    running,
    stream_id: str,
    webhook_server,
    smtp_server,
) -> None:
    box, smtp_port = smtp_server
    settings = AlertsSettings(
        metrics_port=0, rules_refresh_s=0.1, webhook_url=webhook_server, webhook_secret=SECRET,
        smtp_host="127.0.0.1", smtp_port=smtp_port, mail_to="ops@example.org",
    )  # fmt: skip
    running.start(serve_alerts(settings, common, running.stop))
    async with httpx.AsyncClient(base_url=gateway, headers=gateway.headers, timeout=30) as client:
        reg = {"device_name": "Pump", "stream_id": stream_id, "sensors": [{"id": "p"}, {"id": "t"}]}
        await client.post("/api/live/register", json=reg)
        for rule_id, sensor in (("p-hi", "p"), ("t-hi", "t")):
            r = await client.put(f"/api/live/stream/{stream_id}/alert-rules/{rule_id}",
                                 json={"kind": "limit", "sensor_id": sensor, "hi": 10, "severity": "critical"})  # fmt: skip
            assert r.status_code == 200
        await asyncio.sleep(0.5)
        batch = {"stream_id": stream_id,
                 "samples": [{"timestamp": 1_800_000_000 + i, "values": {"p": 20, "t": 30}} for i in range(3)]}  # fmt: skip
        await client.post("/api/live/batch", json=batch)

    async def posted() -> bool:
        return bool(Receiver.posts)

    await eventually(posted)
    headers, body = Receiver.posts[0]
    stamp = headers["X-Vertac-Timestamp"]
    assert headers["X-Vertac-Signature"] == signature(SECRET, stamp, body)
    payload = json.loads(body)
    events = payload["events"]
    assert {e["rule_id"] for e in events} == {"p-hi", "t-hi"}  # one digest for both
    assert all(e["state"] == "raised" and e["severity"] == "critical" for e in events)
    assert payload["summary"].startswith("[critical] 2 alert events")

    async def mailed() -> bool:
        return bool(box.messages)

    await eventually(mailed)
    mail = email.message_from_bytes(box.messages[0])
    assert mail["Subject"].startswith("VerTac [critical] 2 alert events")
    body = mail.get_payload(decode=True).decode()
    assert "p outside its limits" in body
    assert "t outside its limits" in body


def test_the_budget_allows_a_number_per_minute() -> None:
    budget = Budget(2)
    assert [budget.take(t) for t in (0, 1, 2, 59, 61)] == [True, True, False, False, True]
