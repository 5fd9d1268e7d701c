"""VerTac services: independent consumers on the NATS JetStream bus."""

__version__ = "0.1.0"
