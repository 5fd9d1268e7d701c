"""The ``vertac`` command: run the stack, a service, the simulator; set up the bus and database.

Each sub-app lives in its own module (apps.py holds the Typer apps and shared helpers); importing
this package registers every command."""

from __future__ import annotations

from services.cli.apps import app

# isort: off
# registration order is the order of --help: the system first, then what runs on it
from services.cli import system, operate, data, auth

# isort: on

__all__ = ["app", "auth", "data", "main", "operate", "system"]


def main() -> None:
    app(prog_name="vertac")
