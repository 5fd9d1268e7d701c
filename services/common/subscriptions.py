"""Every durable subscription of every service, declared once.

Each row says which service reads what (JetStream stream, filter subject, payload contract), under
which durable name and in which batch size. The services build their consumers from it
(:meth:`Subscription.consumer`) and the AsyncAPI document lists, per channel, who receives it
(``schemas/asyncapi.py``), so the two cannot disagree.

Durable names are relative to the service's ``VERTAC_<SERVICE>_DURABLE`` setting: ``{durable}``
is that setting, ``{p:02d}`` the partition of a partitioned subscription (one durable per
partition; see docs/concepts/bus.md, "Partitions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js.api import AckPolicy
from nats.js.client import JetStreamContext
from pydantic import BaseModel

from schemas import messages, subjects
from services.common.consumer import BatchHandler, DurableConsumer
from services.common.decoding import SensorsOf, decode_frame, frame_decoder, model_decoder
from services.common.metrics import Metrics


@dataclass(frozen=True)
class Subscription:
    service: str
    name: str
    stream: str  # JetStream stream
    kind: str  # subject family: samples, registry, control, cycles, analysis, alerts
    payload: type[BaseModel]  # the contract (FrameJson stands for both frame encodings)
    durable: str  # template: {durable} and, when partitioned, {p}
    batch: int
    description: str
    partitioned: bool = False
    # one acknowledgement settles a whole handled batch (AckPolicy.ALL): only for a durable
    # that one process at a time works on (a partition under its lease), which handles its
    # batches in order and acknowledges nothing itself. Replicas sharing a durable (ingest)
    # must not: one replica's acknowledgement would settle what another still holds
    ack_all: bool = False

    def subject(self, partition: int | None = None) -> str:
        """The filter subject: all streams, or one partition of the stored subjects."""
        if self.partitioned:
            if partition is None:
                raise ValueError(f"{self.service}/{self.name} is partitioned: name the partition")
            return subjects.partition_subject(self.kind, partition)
        return subjects.all_of(self.kind)

    def durable_name(self, durable: str, partition: int | None = None) -> str:
        return self.durable.format(durable=durable, p=partition if partition is not None else 0)

    def consumer(
        self, js: JetStreamContext, durable: str, handle: BatchHandler[Any], metrics: Metrics,
        *, partition: int | None = None, batch: int | None = None,
        sensors: SensorsOf | None = None, stores: bool = False, **policy: Any,
    ) -> DurableConsumer[Any]:  # fmt: skip
        """The durable pull consumer of this row; ``policy`` are the consumer's retry and
        delivery settings (``max_deliver``, ``ack_wait``, ``nak_delay``, ``linger_s``,
        ``guard``, ``handler_acks``). A samples consumer given ``sensors`` decodes only the
        sensors it names per stream; one that ``stores`` frames also refuses NaN or infinity of
        good quality."""
        decode: Any
        if self.payload is not messages.FrameJson:
            decode = model_decoder(self.payload)
        else:
            decode = (
                decode_frame
                if sensors is None and not stores
                else frame_decoder(sensors or (lambda _: None), finite=stores)
            )
        return DurableConsumer(
            js,
            service=self.service,
            durable=self.durable_name(durable, partition),
            stream=self.stream,
            subject=self.subject(partition),
            decode=decode,
            handle=handle,
            metrics=metrics,
            batch=batch or self.batch,
            ack_policy=AckPolicy.ALL if self.ack_all else AckPolicy.EXPLICIT,
            **policy,
        )


def _row(service: str, name: str, kind: str, payload: type[BaseModel], durable: str,
         batch: int, description: str, partitioned: bool = False,
         ack_all: bool = False) -> Subscription:  # fmt: skip
    stream = {"samples": subjects.SAMPLES.name, "registry": subjects.CONTROL.name,
              "control": subjects.CONTROL.name, "alertack": subjects.CONTROL.name,
              "refpush": subjects.CONTROL.name,
              "cycles": subjects.CYCLES.name,
              "analysis": subjects.ANALYSIS.name, "alerts": subjects.ALERTS.name}[kind]  # fmt: skip
    return Subscription(service, name, stream, kind, payload, durable, batch, description,
                        partitioned, ack_all)  # fmt: skip


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    _row("ingest", "frames", "samples", messages.FrameJson, "{durable}", 256,
         "Persists every frame to live_frames, one transaction per batch, idempotent on "
         "stream and seq."),
    _row("ingest", "influx", "samples", messages.FrameJson, "{durable}-influx", 500,
         "With VERTAC_INGEST_INFLUX_URL: writes frames to InfluxDB as sensor_readings."),
    _row("ingest", "registry", "registry", messages.StreamRegistered, "{durable}-registry", 64,
         "Keeps live_streams in step with the registry."),
    _row("cycles", "frames", "samples", messages.FrameJson, "{durable}-p{p:02d}", 256,
         "The per-stream cycle state machine, one durable per partition.", partitioned=True),
    _row("cycles", "commands", "control", messages.CycleCommand, "{durable}-control-p{p:02d}",
         16, "cycle_start, cycle_stop and cycle_abort, in order with the frames of the same "
         "partition.", partitioned=True),
    _row("analysis", "cycles", "cycles", messages.CycleStateChanged, "{durable}", 8,
         "Compares each completed or aborted cycle with the stream's active reference."),
    _row("analysis", "refpush", "refpush", messages.CreateReference, "{durable}-refpush", 4,
         "At a site: references central asked for, made as if asked here."),
    _row("alerts", "frames", "samples", messages.FrameJson, "{durable}-p{p:02d}", 256,
         "Live rules (limit, rate, flatline, data gap, envelope), one durable per partition.",
         partitioned=True, ack_all=True),
    _row("alerts", "analysis", "analysis", messages.AnalysisCompleted, "{durable}-analysis", 16,
         "The health rule, on every analysis."),
    _row("alerts", "cycles", "cycles", messages.CycleStateChanged, "{durable}-cycles", 16,
         "Which cycle is running, for the envelope rule."),
    _row("alerts", "acks", "alertack", messages.AlertControlRequest, "{durable}-acks", 16,
         "At a site: acknowledgements central sent, carried out as if asked here."),
    _row("alerts", "notify", "alerts", messages.AlertChanged, "{durable}-notify", 50,
         "With a notification channel configured: e-mail, webhook or Slack messages."),
)  # fmt: skip


def subscription(service: str, name: str) -> Subscription:
    """The row of ``service``'s subscription ``name``."""
    for row in SUBSCRIPTIONS:
        if row.service == service and row.name == name:
            return row
    raise KeyError(f"{service} has no subscription {name!r}")
