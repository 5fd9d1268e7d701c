"""A service skeleton that declares its durable consumers and logs what it receives.

``cycles``, ``analysis`` and ``alerts`` start from this: they connect, declare the bus and their
consumers, acknowledge what arrives and log it (each message at debug level, a summary every
``summary_every_s`` at info level).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from services.common.config import CommonSettings
from services.common.consumer import Delivery, DurableConsumer
from services.common.runtime import new_metrics, open_bus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscription:
    durable: str
    stream: str
    subject: str
    decode: Callable[[Msg], Any]


class LogReceived:
    """Counts messages per subject and logs them."""

    def __init__(self, durable: str, summary_every_s: float) -> None:
        self.durable = durable
        self.every = summary_every_s
        self.counts: Counter[str] = Counter()
        self.last = time.monotonic()

    async def __call__(self, batch: list[Delivery[Any]]) -> None:
        for d in batch:
            self.counts[d.msg.subject] += 1
            log.debug("received", extra={"durable": self.durable, "subject": d.msg.subject})
        if time.monotonic() - self.last >= self.every:
            log.info("received", extra={"durable": self.durable, "by_subject": dict(self.counts)})
            self.counts.clear()
            self.last = time.monotonic()


async def serve_listener(
    service: str,
    subscriptions: list[Subscription],
    common: CommonSettings,
    stop: asyncio.Event,
    *,
    metrics_host: str,
    metrics_port: int,
    summary_every_s: float = 10.0,
) -> None:
    """Run consumers that log and acknowledge what they receive until ``stop`` is set."""
    metrics = new_metrics(service, metrics_host, metrics_port)
    bus = await open_bus(common, f"vertac-{service}")
    consumers = [
        DurableConsumer(
            bus.js,
            service=service,
            durable=s.durable,
            stream=s.stream,
            subject=s.subject,
            decode=s.decode,
            handle=LogReceived(s.durable, summary_every_s),
            metrics=metrics,
            max_deliver=common.max_deliver,
        )
        for s in subscriptions
    ]
    for consumer in consumers:
        await consumer.declare()
    log.info(f"{service} running", extra={"consumers": [s.durable for s in subscriptions]})
    try:
        await asyncio.gather(*(c.run(stop) for c in consumers))
    finally:
        await bus.close()
