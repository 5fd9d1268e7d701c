"""Prometheus counters every consumer keeps, served at ``/metrics``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

REPLICA_PORT_STEP = 100  # a replica's metrics port: the configured one + k * step
REPLICA_PORTS = 10


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

    def serve(self, host: str, port: int) -> int:
        """Expose the registry over HTTP and return the port it is served on; ``port`` 0 leaves
        it unexposed. A second process of a service on one host finds ``port`` taken and moves up
        in steps of :data:`REPLICA_PORT_STEP` (9101, 9201, 9301, ...), saying where; when no port
        of the range is free it logs and goes on without: the data path matters more."""
        if not port:
            return 0
        log = logging.getLogger(__name__)
        tried = []
        for k in range(REPLICA_PORTS):
            candidate = port + k * REPLICA_PORT_STEP
            if candidate > 65535:
                break
            try:
                start_http_server(candidate, addr=host, registry=self.registry)
            except OSError as exc:
                tried.append(f"{candidate}: {exc.strerror or exc}")
                continue
            if k:
                log.warning(
                    "metrics port in use: serving on another",
                    extra={"host": host, "port": candidate, "configured": port},
                )
            return candidate
        log.error("metrics not served", extra={"host": host, "tried": "; ".join(tried)})
        return 0
