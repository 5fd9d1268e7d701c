"""Fault injection: ``python -m tests.chaos [--short] [fault ...]``."""
