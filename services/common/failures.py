"""How a failure is classified: the message's fault (poison) or an outage (transient)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from edge import client

T = TypeVar("T")


class BadMessage(ValueError):
    """A message that can never be processed; ``field`` names the offending part."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class TransientError(RuntimeError):
    """A failure that may pass (database restarting, network blip): redeliver later."""


_PG_TRANSIENT = (
    psycopg.OperationalError,  # connection lost, server shutting down, pool timeout
    psycopg.InterfaceError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says a server is unreachable or busy, not that the message is bad."""
    if isinstance(exc, BadMessage):
        return False
    if isinstance(exc, (TransientError, *_PG_TRANSIENT)):
        return True
    return client.is_transient(exc)


async def through_outage(
    what: str, attempt: Callable[[], Awaitable[T]], *, max_delay: float = 5.0
) -> T:
    """Run ``attempt`` until it stops failing for a transient reason (backoff up to
    ``max_delay``); what is not transient is raised at once."""
    return await client.through_outage(what, attempt, max_delay=max_delay, transient=is_transient)
