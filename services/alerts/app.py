"""Wiring of the alerts service."""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.messages import AnalysisCompleted
from services.alerts.config import Settings
from services.common.config import CommonSettings
from services.common.decoding import decode_frame, model_decoder
from services.common.listener import Subscription, serve_listener
from services.common.runtime import run_process

SERVICE = "alerts"


def subscriptions(settings: Settings) -> list[Subscription]:
    return [
        Subscription(
            settings.durable, subjects.SAMPLES.name, subjects.all_of("samples"), decode_frame
        ),
        Subscription(
            f"{settings.durable}-analysis",
            subjects.ANALYSIS.name,
            subjects.all_of("analysis"),
            model_decoder(AnalysisCompleted),
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
