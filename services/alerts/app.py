"""Wiring of the alerts service."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from schemas import subjects
from services.alerts.adapters import Alerts, CycleContext, Rules, RuleStates
from services.alerts.config import Settings
from services.alerts.handlers import AlertEngine
from services.alerts.notify import Channel, Email, Notifier, Webhook
from services.common.config import CommonSettings
from services.common.consumer import DurableConsumer
from services.common.partitions import Partitioned, PartitionLeases, after_previous_holder
from services.common.responder import respond
from services.common.runtime import open_service, run_process
from services.common.sites import each, importers
from services.common.subscriptions import subscription

SERVICE = "alerts"
log = logging.getLogger(__name__)


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    """Evaluate alert rules until ``stop`` is set."""
    metrics, bus, pool = await open_service(
        SERVICE, common, settings.metrics_host, settings.metrics_port
    )
    engine = AlertEngine(
        Rules(bus.nc, await bus.js.key_value(subjects.KV_ALERT_RULES)),
        RuleStates(await bus.js.key_value(subjects.KV_ALERT_STATE)),
        Alerts(bus.js, pool),
        settings.reraise_window_s,
        settings.max_new_per_minute,
        CycleContext(bus.nc, pool),
    )
    await engine.refresh()
    held: set[int] = set()
    leases = PartitionLeases(await bus.js.key_value(subjects.KV_LEASES), SERVICE, nc=bus.nc)

    async def partition(p: int, done: asyncio.Event) -> None:
        frames = subscription(SERVICE, "frames").consumer(
            bus.js, settings.durable, engine.on_frames, metrics, partition=p,
            batch=settings.batch, max_deliver=common.max_deliver, ack_wait=settings.ack_wait_s,
            guard=lambda: leases.holds(p),  # no rule state is changed on a lease that passed on
            sensors=engine.sensors_of, pause_s=settings.fetch_pause_s,
        )  # fmt: skip
        await frames.declare()
        await after_previous_holder([frames], done)
        engine.states.forget()  # another replica may have written rule states meanwhile
        held.add(p)
        try:
            await frames.run(done)
        finally:
            held.discard(p)

    def owns(stream_id: str) -> bool:
        p = subjects.partition_of(stream_id)
        return p in held and leases.holds(p)

    engine.owns = owns
    consumers: list[DurableConsumer[Any]] = [
        subscription(SERVICE, "analysis").consumer(
            bus.js, settings.durable, engine.on_analyses, metrics, max_deliver=common.max_deliver
        ),
        subscription(SERVICE, "cycles").consumer(
            bus.js, settings.durable, engine.on_cycles, metrics, max_deliver=common.max_deliver
        ),
    ]
    if common.site:  # a site of a central VerTac: the acknowledgements central sends
        consumers.append(
            subscription(SERVICE, "acks").consumer(
                bus.js, settings.durable, engine.on_acks, metrics, max_deliver=common.max_deliver
            )
        )
    channels = channels_of(settings)
    if channels:
        notifier = Notifier(
            channels, engine.index, settings.notify_min_severity, settings.notify_max_per_minute
        )
        consumers.append(
            subscription(SERVICE, "notify").consumer(
                bus.js,
                settings.durable,
                notifier,
                metrics,
                max_deliver=settings.notify_max_deliver,
                nak_delay=settings.notify_retry_delay_s,
                linger_s=settings.notify_digest_window_s,
            )
        )
    for consumer in consumers:
        await consumer.declare()
    consumers += await importers(
        SERVICE, bus.js, settings.durable, common.site_ids, metrics,
        {"alerts": each(engine.alerts.store)}, max_deliver=common.max_deliver,
    )  # fmt: skip

    await respond(bus.nc, subjects.alert_requests(), SERVICE, engine.control, "alert")
    log.info("alerts running", extra={"consumers": [c.durable for c in consumers]})
    try:
        await asyncio.gather(
            Partitioned(leases, partition).run(stop),
            *(c.run(stop) for c in consumers),
            engine.run_ticks(stop, settings.tick_s),
            engine.run_refresh(stop, settings.rules_refresh_s),
        )
    finally:
        await bus.close()
        await pool.close()


def channels_of(settings: Settings) -> list[Channel]:
    """The notification channels the settings configure."""
    channels: list[Channel] = []
    if settings.webhook_url:
        channels.append(Webhook(settings.webhook_url, settings.webhook_secret))
    if settings.smtp_host:
        to = [a.strip() for a in settings.mail_to.split(",") if a.strip()]
        if not to:
            raise ValueError("VERTAC_ALERTS_SMTP_HOST is set but VERTAC_ALERTS_MAIL_TO is empty")
        channels.append(
            Email(
                settings.smtp_host,
                settings.smtp_port,
                settings.mail_from,
                to,
                settings.smtp_user,
                settings.smtp_password,
                settings.smtp_starttls,
            )
        )
    return channels


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
