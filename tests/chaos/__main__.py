"""``python -m tests.chaos [--short] [fault names ...]`` prints the fault-injection table."""

from tests.chaos.suite import run_cli

run_cli()
