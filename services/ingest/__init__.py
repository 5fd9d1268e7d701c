"""Ingest: persists every sample frame to PostgreSQL (and optionally InfluxDB)."""
