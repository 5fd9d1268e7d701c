"""Sources of samples, one module per protocol, each registering itself (as Telegraf's inputs
and thingsboard-gateway's connectors do): ``@register("modbus")`` on its reader class. A
machine's source is made by :func:`source_of`, which imports only the module of its type, so an
edge that reads Modbus never loads the OPC-UA or MQTT client.

| type | module | reads |
| --- | --- | --- |
| ``modbus`` | :mod:`edge.sources.modbus` | Modbus TCP registers, polled |
| ``opcua`` | :mod:`edge.sources.opcua` | OPC-UA nodes, subscribed or polled |
| ``mqtt`` | :mod:`edge.sources.mqtt` | MQTT topics: JSON or Sparkplug B |
| ``csv``, ``parquet`` | :mod:`edge.sources.files` | recorded samples, replayed |

A new protocol: a module here with a class ``Reader(source_config, machine_config)`` that has
``stream(stop)`` (an async iterator of :class:`Samples`) and ``close()``, decorated with
``@register("<type>")``, its config model in :mod:`edge.config`, and a line in ``MODULES``."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from edge.config import MachineConfig
from edge.sources.base import QueuedSource, Samples, drain, quiet

__all__ = [
    "MODULES",
    "QueuedSource",
    "Samples",
    "Source",
    "drain",
    "quiet",
    "register",
    "source_of",
]


class Source(Protocol):
    def stream(self, stop: asyncio.Event) -> AsyncIterator[Samples]: ...

    def close(self) -> None: ...


# the module of each source type (imported when a machine uses it)
MODULES = {
    "modbus": "edge.sources.modbus",
    "opcua": "edge.sources.opcua",
    "mqtt": "edge.sources.mqtt",
    "csv": "edge.sources.files",
    "parquet": "edge.sources.files",
}
_REGISTRY: dict[str, Callable[[Any, MachineConfig], Source]] = {}
R = TypeVar("R")


def register(*types: str) -> Callable[[R], R]:
    """Register a reader class for source ``types``."""

    def add(reader: R) -> R:
        for t in types:
            _REGISTRY[t] = reader  # type: ignore[assignment]
        return reader

    return add


def source_of(config: MachineConfig) -> Source:
    """The reader of the machine's source (its protocol's module imported now)."""
    kind = config.source.type
    if kind not in MODULES:
        raise ValueError(f"unknown source type {kind!r}; known: {', '.join(sorted(MODULES))}")
    importlib.import_module(MODULES[kind])
    return _REGISTRY[kind](config.source, config)
