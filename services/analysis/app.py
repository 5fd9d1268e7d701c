"""Wiring of the analysis service."""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.messages import CycleStateChanged
from services.analysis.config import Settings
from services.common.config import CommonSettings
from services.common.decoding import model_decoder
from services.common.listener import Subscription, serve_listener
from services.common.runtime import run_process

SERVICE = "analysis"


def subscriptions(settings: Settings) -> list[Subscription]:
    return [
        Subscription(
            settings.durable,
            subjects.CYCLES.name,
            subjects.all_of("cycles"),
            model_decoder(CycleStateChanged),
        ),
    ]


async def serve(settings: Settings, common: CommonSettings, stop: asyncio.Event) -> None:
    await serve_listener(
        SERVICE,
        subscriptions(settings),
        common,
        stop,
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
        summary_every_s=settings.summary_every_s,
    )


def main() -> None:
    settings, common = Settings(), CommonSettings()
    run_process(SERVICE, common, lambda stop: serve(settings, common, stop))
