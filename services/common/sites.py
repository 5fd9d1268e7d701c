"""What a central VerTac takes into its own stores from its sites.

Central's bus keeps each site's messages in ``VERTAC_SITE_<site>`` under ``vertac.<site>.…``
(services/federation.py). The service that owns a kind of data at a site owns it at central
too: it reads it from each site's stream with a durable consumer of its own, as it arrived (a
frame is stored as the site sent it, decoded once, for its header), under the id central gives
a site's stream, ``<site>.<stream_id>``. Cycle and alert ids start with the stream id, so they
are qualified the same way; a cycle's recording stays at the site.

Nothing at central computes a site's cycles, analyses or alerts again: the site did.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from pydantic import BaseModel

from schemas import messages, subjects
from schemas.frame_model import Frame
from services.common.consumer import BatchHandler, Delivery, DurableConsumer
from services.common.decoding import frame_decoder, model_decoder
from services.common.failures import BadMessage
from services.common.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteImport:
    """One kind a service takes from every site, into its own tables."""

    service: str
    name: str
    kind: str  # the site's channel kind: samples, registry, cycles, analysis, alerts
    payload: type[BaseModel]
    batch: int
    description: str

    def stream(self, site: str) -> str:
        return subjects.site_stream(site)

    def subject(self, site: str) -> str:
        return f"{subjects.PREFIX}.{site}.{self.kind}.>"  # every stream of the kind

    def durable_name(self, durable: str, site: str) -> str:
        return f"{durable}-{self.name}-site-{site}"

    def consumer(
        self, js: JetStreamContext, durable: str, site: str, handle: BatchHandler[Any],
        metrics: Metrics, **policy: Any,
    ) -> DurableConsumer[Any]:  # fmt: skip
        local: Callable[[Msg], Any] = (
            frame_decoder(lambda _: (), finite=True)  # checked whole, stored as it arrived
            if self.payload is messages.FrameJson
            else model_decoder(self.payload)
        )
        return DurableConsumer(
            js,
            service=self.service,
            durable=self.durable_name(durable, site),
            stream=self.stream(site),
            subject=self.subject(site),
            decode=site_decoder(site, local),
            handle=handle,
            metrics=metrics,
            batch=self.batch,
            **policy,
        )


SITE_IMPORTS: tuple[SiteImport, ...] = (
    SiteImport("ingest", "frames", "samples", messages.FrameJson, 256,
               "A site's frames into live_frames and the rollups, as the site sent them."),
    SiteImport("ingest", "registry", "registry", messages.StreamRegistered, 64,
               "A site's registrations into live_streams and the registry."),
    SiteImport("cycles", "cycles", "cycles", messages.CycleStateChanged, 64,
               "A site's cycles into live_cycles."),
    SiteImport("analysis", "analysis", "analysis", messages.AnalysisCompleted, 16,
               "A site's analyses into live_deviations."),
    SiteImport("alerts", "alerts", "alerts", messages.AlertChanged, 50,
               "A site's alerts into live_alerts and their history."),
)  # fmt: skip


def imports_of(service: str) -> dict[str, SiteImport]:
    """The kinds ``service`` takes from the sites, by name."""
    return {row.name: row for row in SITE_IMPORTS if row.service == service}


_QUALIFIED = ("stream_id", "cycle_id", "alert_id")


def qualify(item: Any, site: str) -> Any:
    """``item`` of site ``site`` as central keeps it: its stream, cycle and alert ids start
    with ``<site>.``; a cycle's recording (kept at the site) is not named."""
    if isinstance(item, Frame):
        return dataclasses.replace(item, stream_id=subjects.site_stream_id(site, item.stream_id))
    update: dict[str, Any] = {
        name: f"{site}.{value}"
        for name in _QUALIFIED
        if isinstance(value := getattr(item, name, None), str) and value
    }
    if getattr(item, "recording", None):
        update["recording"] = None
    return item.model_copy(update=update)


def site_decoder(site: str, local: Callable[[Msg], Any]) -> Callable[[Msg], Any]:
    """A decoder of site ``site``'s messages at central (``vertac.<site>.<kind>.…``): checked as
    the site checked them (``local``, on the site's own subject), then :func:`qualify`-ed."""
    prefix = f"{subjects.PREFIX}.{site}."

    def decode(msg: Msg) -> Any:
        if not msg.subject.startswith(prefix):
            raise BadMessage("subject", f"{msg.subject!r} is not a subject of site {site!r}")
        local_subject = f"{subjects.PREFIX}.{msg.subject[len(prefix) :]}"
        at_site = dataclasses.replace(msg, subject=local_subject)
        return qualify(local(at_site), site)

    return decode


def each(store: Callable[[Any], Awaitable[None]]) -> BatchHandler[Any]:
    """A batch handler that stores each item in order (events: few, each a row or two)."""

    async def handle(batch: list[Delivery[Any]]) -> None:
        for d in batch:
            await store(d.item)

    return handle


async def importers(
    service: str, js: JetStreamContext, durable: str, sites: tuple[str, ...], metrics: Metrics,
    handlers: dict[str, BatchHandler[Any]], **policy: Any,
) -> list[DurableConsumer[Any]]:  # fmt: skip
    """The declared consumers of what ``service`` takes from each of ``sites`` (none when
    this is not a central VerTac), each kind handled by ``handlers[name]``."""
    consumers = [
        row.consumer(js, durable, site, handlers[name], metrics, **policy)
        for site in sites
        for name, row in imports_of(service).items()
    ]
    for consumer in consumers:
        await consumer.declare()
    if consumers:
        log.info("taking the sites' data", extra={"sites": list(sites), "service": service})
    return consumers
