"""VerTac services: independent consumers on the NATS JetStream bus."""

# the one version: the package (pyproject reads it from here), /api/health, the OpenAPI and
# AsyncAPI documents and the newest CHANGELOG entry all say this
__version__ = "0.19.0"
