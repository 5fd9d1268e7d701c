"""What every client of the VerTac bus needs, and nothing else: the bus settings, a NATS
connection that fails in one clear line, outage classification and retries, the stream registry
and the per-stream sequence numbers in JetStream KV.

The edge agent, the CLI and the services all build on it. It lives with the edge, the lightest
part of VerTac: it imports only the contracts of ``schemas``, nats-py and pydantic, so an edge
box needs no server part.

The registry record is the source of truth (``vertac_streams``); ingest mirrors it into
PostgreSQL's ``live_streams``. Sequence numbers come from ``vertac_seq`` with compare-and-set, so
every publisher of a stream (edge, REST gateway replicas) draws from one monotonic counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.subjects import HEADER_STATUS

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_REASON_CHARS: Final = 2000


class BusSettings(BaseSettings):
    """Where the bus is, and how a process logs (env prefix ``VERTAC_``)."""

    model_config = SettingsConfigDict(env_prefix="VERTAC_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", description="NATS server URL(s), comma separated."
    )
    nats_tls_ca: str = Field(
        default="",
        description="CA certificate (PEM) the NATS server's certificate is verified against; "
        "setting it (or a tls:// URL) turns TLS on. Verified always, hostname included.",
    )
    nats_tls_cert: str = Field(
        default="", description="Client certificate (PEM), for a server that verifies clients."
    )
    nats_tls_key: str = Field(default="", description="Its private key (PEM).")
    nats_user: str = Field(
        default="", description="NATS user, for URLs without one (keeps passwords out of URLs)."
    )
    nats_password: str = Field(default="", description="Its password (with VERTAC_NATS_USER).")
    startup_retry: bool = Field(
        default=False,
        description="Retry unreachable servers with backoff at start instead of exiting.",
    )
    log_level: str = Field(default="INFO")
    log_json: bool | None = Field(
        default=None, description="JSON logs; default: when not a terminal."
    )


class ServerUnreachable(RuntimeError):
    """A server the service needs does not answer at start-up (message on one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class BusLayoutError(ServerUnreachable):
    """NATS answers but refuses the JetStream layout (e.g. less storage than the limits ask)."""


class PlacementPending(BusLayoutError):
    """No JetStream servers to place a stream's replicas on: a cluster that is still forming (its
    servers started together with the services) or that has fewer servers than the replicas.
    Retried at start-up like an unreachable server."""


@dataclass
class Bus:
    """A connected NATS client with the JetStream layout declared."""

    nc: NatsClient
    js: JetStreamContext
    user: str = ""  # the bus user it connected as ("" when none)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)
            await self.nc.close()


LOCAL_NATS: Final = "nats://127.0.0.1:4222"  # vertac run's bus
LOCAL_NATS_SECRETS: Final = Path(".vertac") / "nats.secrets"


def local_admin_url(url: str) -> str:
    """``url``, or, when it is ``vertac run``'s bus and the command runs beside its data
    (``.vertac/nats.secrets``), that bus with its admin's credentials."""
    if url != LOCAL_NATS or not LOCAL_NATS_SECRETS.is_file():
        return url
    try:
        password = str(json.loads(LOCAL_NATS_SECRETS.read_text())["admin"])
    except (OSError, ValueError, KeyError):
        return url
    return (
        LOCAL_NATS.replace("://", f"://admin:{quote(password, safe='')}@", 1) if password else url
    )


def beside_local_run(settings: BusSettings) -> BusSettings:
    """The settings of a command that may run beside ``vertac run`` (simulate, replay): with
    no bus user given, it takes the local admin's credentials, as the other commands do."""
    if settings.nats_user:
        return settings
    return settings.model_copy(update={"nats_url": local_admin_url(settings.nats_url)})


async def open_client(settings: BusSettings, name: str) -> Bus:
    """Connect without declaring anything: what a publisher (an edge) does. The services
    declare streams and buckets; until they have, a publish fails as an outage and is retried."""
    nc = await connect(settings, name)
    return Bus(nc, nc.jetstream(timeout=10), bus_user(settings) or "")


_STARTING: set[asyncio.Task[object]] = set()  # tasks inside with_startup_retry


def cancel_startup() -> int:
    """Cancel the tasks still waiting in :func:`with_startup_retry` (a stop signal came before
    the servers answered: an init system must not wait out the backoff). Returns how many."""
    waiting = [task for task in _STARTING if not task.done()]
    for task in waiting:
        task.cancel()
    return len(waiting)


async def with_startup_retry(
    what: str, attempt: Callable[[], Awaitable[T]], *, retry: bool, max_delay: float = 30.0
) -> T:
    """Run ``attempt``; on failure raise :class:`ServerUnreachable`, or retry with backoff."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always called from a task
        return await _startup_retry(what, attempt, retry, max_delay)
    _STARTING.add(task)
    try:
        return await _startup_retry(what, attempt, retry, max_delay)
    finally:
        _STARTING.discard(task)


async def _startup_retry(
    what: str, attempt: Callable[[], Awaitable[T]], retry: bool, max_delay: float
) -> T:
    delay = 0.5
    while True:
        try:
            return await attempt()
        except (OSError, TimeoutError, nats.errors.Error, ConnectionError, PlacementPending) as exc:
            if not retry and isinstance(exc, PlacementPending):
                raise
            if not retry:
                raise ServerUnreachable(
                    f"{what} is unreachable: {exc or type(exc).__name__}"
                ) from exc
            log.warning(
                "%s unreachable, retrying", what, extra={"retry_in_s": delay, "error": str(exc)}
            )
        except Exception as exc:  # psycopg and friends raise their own OperationalError types
            if "Operational" not in type(exc).__name__ and "Connection" not in type(exc).__name__:
                raise
            if not retry:
                raise ServerUnreachable(f"{what} is unreachable: {exc}") from exc
            log.warning(
                "%s unreachable, retrying", what, extra={"retry_in_s": delay, "error": str(exc)}
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def redact(urls: str) -> str:
    """NATS URL(s) without passwords, for log lines and errors."""
    return re.sub(r"(://[^:/@,\s]*):[^@,\s]*@", r"\1:***@", urls)


def tls_context(settings: BusSettings) -> ssl.SSLContext | None:
    """The TLS settings of the NATS connection; None when TLS is not asked for."""
    urls = [u.strip() for u in settings.nats_url.split(",")]
    if not (
        settings.nats_tls_ca or settings.nats_tls_cert or any(u.startswith("tls://") for u in urls)
    ):
        return None
    try:
        context = ssl.create_default_context(cafile=settings.nats_tls_ca or None)
        if settings.nats_tls_cert:
            context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ServerUnreachable(
            f"the NATS TLS files cannot be used (VERTAC_NATS_TLS_CA, _CERT, _KEY): {exc}"
        ) from exc
    return context


_USER_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix of a bus user, ``_INBOX.<user>``: the bus VerTac configures lets each
    user subscribe to its own inbox only, so no one reads another's replies. Without a user (an
    open bus) or with a name that is no subject token: NATS's own, ``_INBOX``."""
    if user and _USER_TOKEN.fullmatch(user):
        return f"_INBOX.{user}"
    return "_INBOX"


def bus_user(settings: BusSettings) -> str | None:
    """The bus user of a connection: VERTAC_NATS_USER, else the one in the first URL."""
    if settings.nats_user:
        return settings.nats_user
    first = settings.nats_url.split(",")[0].strip()
    try:
        name = urlsplit(first).username
    except ValueError:
        return None
    return unquote(name) if name else None


async def connect(settings: BusSettings, name: str) -> NatsClient:
    """Connect to NATS, failing fast (or retrying, per settings) when it is unreachable."""
    tls = tls_context(settings)
    problems: list[str] = []

    async def attempt() -> NatsClient:
        async def on_error(exc: Exception) -> None:
            problems.append(str(exc) or type(exc).__name__)
            if "permissions violation" in str(exc).lower():  # retried, but it will not pass
                log.error(
                    "the bus refused this: the NATS user may not publish or subscribe there "
                    "(an edge's credentials name one stream: vertac auth edge STREAM)",
                    extra={"error": str(exc)},
                )
                return
            log.warning("nats connection problem", extra={"error": str(exc)})

        return await nats.connect(
            servers=[u.strip() for u in settings.nats_url.split(",")],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=on_error,
            tls=tls,
            user=settings.nats_user or None,
            password=settings.nats_password or None,
            inbox_prefix=inbox_prefix(bus_user(settings)),
        )

    async def first() -> NatsClient:
        # nats.connect with reconnects enabled keeps trying an absent server; a plain TCP probe
        # first tells "nothing listens there" apart at once.
        await _probe_any([u.strip() for u in settings.nats_url.split(",")])
        problems.clear()
        try:
            return await asyncio.wait_for(attempt(), timeout=10)
        except TimeoutError as exc:  # it answers, but refuses us: say why (TLS, credentials)
            if problems:
                # the server's own reason (credentials, TLS) over what followed it (the
                # connection it closed then reads as reset)
                telling = [p for p in problems if _TELLING.search(p)]
                raise ConnectionError((telling or problems)[-1]) from exc
            raise

    return await with_startup_retry(
        f"NATS at {redact(settings.nats_url)}", first, retry=settings.startup_retry
    )


_TELLING = re.compile(r"(?i)authori[sz]ation|permission|certificate|ssl|tls")


async def _probe_any(urls: list[str]) -> None:
    errors = []
    for url in urls:
        parsed = urlsplit(url if "://" in url else f"nats://{url}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), 3
            )
        except (OSError, TimeoutError) as exc:
            said = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            errors.append(f"{parsed.netloc}: {said}")
            continue
        writer.close()
        return
    raise ConnectionRefusedError("; ".join(errors))


# --- failures -------------------------------------------------------------------------------

_NOT_AN_OUTAGE = (
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.js.errors.BadRequestError,
    nats.js.errors.InvalidKeyError,
    nats.js.errors.InvalidBucketNameError,
    nats.js.errors.InvalidObjectNameError,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says the bus or the network is unreachable or busy."""
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, nats.errors.Error):
        return not isinstance(exc, _NOT_AN_OUTAGE)
    return False


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and bounded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_REASON_CHARS] if text else type(exc).__name__


async def through_outage(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    max_delay: float = 5.0,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``attempt`` until it stops failing for a transient reason (backoff up to
    ``max_delay``); what is not transient is raised at once."""
    delay = 0.2
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("%s failed, retrying", what, extra={"error": describe(exc)})
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


# --- stream registry and sequence numbers ---------------------------------------------------


async def until_answered(
    ask: Callable[[], Awaitable[T]],
    wait_s: float = 10.0,
    retry: tuple[type[Exception], ...] = (),
) -> T:
    """``ask()``, asked again while no service answers its subject (one starting or being
    restarted: ``NoRespondersError`` or one of ``retry``) for up to ``wait_s``; then the error
    goes to the caller."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.1
    waits: tuple[type[Exception], ...] = (nats.errors.NoRespondersError, *retry)
    while True:
        try:
            return await ask()
        except waits:
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def ask(
    nc: NatsClient, subject: str, body: bytes, timeout_s: float = 30.0
) -> tuple[int, bytes]:
    """A request to the service that answers ``subject`` (see the catalogue's request-reply
    channels): the status of its ``Vertac-Status`` header and the JSON body. While no service
    answers it is asked again for up to 10 s (:func:`until_answered`)."""
    msg = await until_answered(lambda: nc.request(subject, body, timeout=timeout_s))
    return int((msg.headers or {}).get(HEADER_STATUS, "200")), msg.data
