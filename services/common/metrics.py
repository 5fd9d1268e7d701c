"""Prometheus counters every consumer keeps, served at ``/metrics``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


@dataclass
class Metrics:
    """One registry per service, so in-process tests can run several services side by side."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["service", "consumer"]
        r = self.registry
        self.messages_in = Counter(
            "vertac_messages_in", "Messages fetched from the bus", labels, registry=r
        )
        self.messages_done = Counter(
            "vertac_messages_processed", "Messages processed and acknowledged", labels, registry=r
        )
        self.samples = Counter(
            "vertac_samples_persisted", "Samples written by this consumer", labels, registry=r
        )
        self.messages_out = Counter(
            "vertac_messages_out",
            "Messages published to the bus",
            ["service", "subject_kind"],
            registry=r,
        )
        self.redeliveries = Counter(
            "vertac_redeliveries", "Messages delivered more than once", labels, registry=r
        )
        self.dead_letters = Counter(
            "vertac_dead_letters", "Messages sent to the dead-letter subject", labels, registry=r
        )
        self.errors = Counter("vertac_errors", "Failures, by kind", [*labels, "kind"], registry=r)
        self.dependency_down = Gauge(
            "vertac_dependency_down",
            "1 while this consumer retries through an outage of a server it needs",
            labels,
            registry=r,
        )
        self.lag = Gauge(
            "vertac_consumer_lag", "Messages waiting for this durable consumer", labels, registry=r
        )
        self.ack_pending = Gauge(
            "vertac_consumer_ack_pending",
            "Messages delivered but not yet acknowledged",
            labels,
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose the registry over HTTP; ``port`` 0 leaves it unexposed. A port already in use
        is logged and skipped: the data path matters more than the counters."""
        if not port:
            return
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            logging.getLogger(__name__).error(
                "metrics not served", extra={"host": host, "port": port, "error": str(exc)}
            )
