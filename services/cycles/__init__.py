"""Cycles: the per-stream cycle state machine; consumes samples and control commands."""
