"""Notifications of alert events: signed webhooks and e-mail, rate limited, with digests.

A batch of events fetched together goes out as one message per channel (a digest when there are
several). A channel over its per-minute budget, or one that fails, naks the batch with a delay:
the events come back later and are sent then, never dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from collections import deque
from email.message import EmailMessage
from typing import Protocol

import httpx

from schemas.messages import AlertChanged, AlertRule
from services.common.consumer import Delivery
from services.common.failures import TransientError

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def summary(events: list[AlertChanged]) -> str:
    if len(events) == 1:
        e = events[0]
        return f"[{e.severity}] {e.stream_id}: {e.message} ({e.state})"
    worst = max(events, key=lambda e: SEVERITY_RANK[e.severity]).severity
    streams = ", ".join(sorted({e.stream_id for e in events}))
    return f"[{worst}] {len(events)} alert events on {streams}"


def event_key(e: AlertChanged) -> str:
    return f"{e.alert_id}:{e.state}:{e.occurrences}:{e.at.isoformat()}"


class Channel(Protocol):
    name: str

    async def send(self, events: list[AlertChanged]) -> None: ...


class Webhook:
    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout

    async def send(self, events: list[AlertChanged]) -> None:
        body = json.dumps(
            {
                "summary": summary(events),
                "events": [json.loads(e.model_dump_json()) for e in events],
            }
        ).encode()
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Vertac-Timestamp": stamp}
        if self.secret:
            headers["X-Vertac-Signature"] = signature(self.secret, stamp, body)
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                r = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"webhook {self.url}: {exc!r}") from exc
        if r.status_code >= 300:
            raise TransientError(f"webhook {self.url} answered {r.status_code}")


class Email:
    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        to: list[str],
        user: str = "",
        password: str = "",
        starttls: bool = False,
    ) -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, to
        self.user, self.password, self.starttls = user, password, starttls

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=15) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(message)

    async def send(self, events: list[AlertChanged]) -> None:
        message = EmailMessage()
        message["Subject"] = "VerTac " + summary(events)
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        lines = [
            f"{e.at.isoformat()}  {e.severity:<8} {e.state:<12} {e.stream_id}  {e.message}"
            f"  (alert {e.alert_id}, {e.occurrences}x)"
            for e in events
        ]
        message.set_content("\n".join(lines) + "\n")
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"SMTP {self.host}:{self.port}: {exc!r}") from exc


class Budget:
    """At most ``per_minute`` sends in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.sent: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self.sent and now - self.sent[0] >= 60:
            self.sent.popleft()
        if len(self.sent) >= self.per_minute:
            return False
        self.sent.append(now)
        return True


class Notifier:
    """Handler of the notification consumer."""

    def __init__(
        self,
        channels: list[Channel],
        rules: dict[str, AlertRule],
        min_severity: str,
        per_minute: int,
    ) -> None:
        self.channels = channels
        self.rules = rules  # "<stream_id>.<rule_id>" -> rule, kept fresh by the engine
        self.min_rank = SEVERITY_RANK[min_severity]
        self.budgets = {c.name: Budget(per_minute) for c in channels}
        self.delivered: dict[str, set[str]] = {c.name: set() for c in channels}

    def wanted(self, event: AlertChanged, channel: str) -> bool:
        rule = self.rules.get(f"{event.stream_id}.{event.rule_id}")
        if rule is not None and rule.notify is not None:
            return channel in rule.notify
        return SEVERITY_RANK[event.severity] >= self.min_rank

    async def __call__(self, batch: list[Delivery[AlertChanged]]) -> None:
        events = [d.item for d in batch]
        for channel in self.channels:
            todo = [e for e in events if self.wanted(e, channel.name)]
            todo = [e for e in todo if event_key(e) not in self.delivered[channel.name]]
            if not todo:
                continue
            if not self.budgets[channel.name].take(time.monotonic()):
                raise TransientError(
                    f"{channel.name}: over {self.budgets[channel.name].per_minute}/min"
                )
            await channel.send(todo)
            # a redelivered batch (another channel failed) is not sent twice on this one
            self.delivered[channel.name].update(event_key(e) for e in todo)
            if len(self.delivered[channel.name]) > 10_000:
                self.delivered[channel.name].clear()
