"""How a failure is classified: the message's fault (poison) or an outage (transient)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
import psycopg

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_REASON_CHARS: Final = 2000


class BadMessage(ValueError):
    """A message that can never be processed; ``field`` names the offending part."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class TransientError(RuntimeError):
    """A failure that may pass (database restarting, network blip): redeliver later."""


_NOT_AN_OUTAGE = (
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.js.errors.BadRequestError,
    nats.js.errors.InvalidKeyError,
    nats.js.errors.InvalidBucketNameError,
    nats.js.errors.InvalidObjectNameError,
)
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
    if isinstance(exc, (TransientError, ConnectionError, TimeoutError, *_PG_TRANSIENT)):
        return True
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, nats.errors.Error):
        return not isinstance(exc, _NOT_AN_OUTAGE)
    return False


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and bounded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_REASON_CHARS] if text else type(exc).__name__


async def through_outage(
    what: str, attempt: Callable[[], Awaitable[T]], *, max_delay: float = 5.0
) -> T:
    """Run ``attempt`` until it stops failing for a transient reason (backoff up to
    ``max_delay``); what is not transient is raised at once."""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s failed, retrying", what, extra={"error": describe(exc)})
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
