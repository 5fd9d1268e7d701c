"""What every client of the VerTac bus needs, and nothing else: the bus settings, a NATS
connection that fails in one clear line, outage classification and retries, the stream registry
and the per-stream sequence numbers in JetStream KV.

Services and the edge agent both build on it; it depends on nats-py and pydantic only (an edge
box installs no server packages).

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
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import subjects
from schemas.messages import (
    RegistryReply,
    RegistryRequest,
    StreamRegistered,
    StreamRegistration,
)

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


async def with_startup_retry(
    what: str, attempt: Callable[[], Awaitable[T]], *, retry: bool, max_delay: float = 30.0
) -> T:
    """Run ``attempt``; on failure raise :class:`ServerUnreachable`, or retry with backoff."""
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


async def reserve_seq(kv: KeyValue, stream_id: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive sequence numbers of ``stream_id``; returns the first."""
    if count < 1:
        raise ValueError("count must be >= 1")
    for attempt in range(100):
        try:
            entry = await kv.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            try:
                await kv.create(stream_id, str(count).encode())
            except KeyWrongLastSequenceError:
                continue
            return 0
        current = int(entry.value or b"0")
        try:
            await kv.update(stream_id, str(current + count).encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(0.001 * attempt)
            continue
        return current
    raise RuntimeError(f"could not reserve a sequence number for {stream_id}: too much contention")


async def release_seq(kv: KeyValue, stream_id: str, reserved_end: int, next_seq: int) -> bool:
    """Give back the unused tail ``next_seq..reserved_end`` of a reservation, if nobody reserved
    after it, so a cleanly stopped publisher leaves no gap in ``seq``. Returns True if released."""
    if next_seq >= reserved_end:
        return False
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return False
    if int(entry.value or b"0") != reserved_end:
        return False
    try:
        await kv.update(stream_id, str(next_seq).encode(), last=entry.revision)
    except KeyWrongLastSequenceError:
        return False
    return True


async def lookup(kv: KeyValue, stream_id: str) -> StreamRegistered | None:
    """The registration of ``stream_id``, or None: also for a record that is not a valid
    registration of this stream, which is logged (a bad record reads as none, and the next
    registration replaces it)."""
    try:
        entry = await kv.get(stream_id)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    try:
        record = StreamRegistered.model_validate_json(entry.value)
    except ValidationError as exc:
        reason = f"not a valid registration: {exc.errors()[0].get('msg', '')}"
    else:
        if record.stream_id == stream_id:
            return record
        reason = f"names stream {record.stream_id!r}"
    log.warning(
        "skipping a malformed registration",
        extra={"bucket": subjects.KV_STREAMS, "key": stream_id, "reason": reason},
    )
    return None


def derive_stream_id(device_name: str) -> str:
    """A stream id made from a device name: 'Press 1 / Line A' -> 'press-1-line-a'."""
    # letters with accents keep their base letter: 'Prüfstand' -> 'prufstand'
    ascii_name = unicodedata.normalize("NFKD", device_name).encode("ascii", "ignore").decode()
    cleaned = "".join(c.lower() if c.isalnum() else "-" for c in ascii_name)
    token = "-".join(part for part in cleaned.split("-") if part)[:64]
    return subjects.check_stream_id(token or "stream")


async def register(
    js: JetStreamContext, kv: KeyValue, registration: StreamRegistration
) -> tuple[StreamRegistered, bool]:
    """Store and announce a registration; returns it and whether the stream existed before."""
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    before = await lookup(kv, stream_id)
    existed = before is not None
    dataset_id = registration.dataset_id or (before.dataset_id if before else "")
    record = StreamRegistered(
        stream_id=stream_id,
        device_name=registration.device_name,
        description=registration.description,
        sensors=registration.sensors,
        registered_at=datetime.now(UTC),
        dataset_id=dataset_id or f"live-{stream_id}"[:64],
    )
    body = record.model_dump_json().encode()
    await kv.put(stream_id, body)
    await js.publish(
        subjects.registry(stream_id),
        body,
        headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
    )
    return record, existed


# --- the registry service (vertac.register.<stream_id>) -------------------------------------


class RegistryRefused(ValueError):
    """The registry service refused a request (4xx): not worth retrying as it is."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the registry refused the request ({status}): {reason}")
        self.status = status
        self.reason = reason


class RegistryBusy(ConnectionError):
    """The registry service could not answer now (503): retry."""


class NoRegistryService(ConnectionError):
    """No ingest service answers registry requests yet: waited out like an outage."""


def _no_registry_service(bus: Bus) -> None:
    """An edge never writes the registry itself: without the service it waits."""
    if bus.user.startswith("edge-"):
        raise NoRegistryService(
            "no ingest service answers vertac.register requests yet (it validates and "
            "writes registrations)"
        )


async def registry_call(
    bus: Bus, stream_id: str, request: RegistryRequest, wait_s: float = 10.0
) -> RegistryReply:
    """Ask the registry service (ingest) and return its reply; a refusal raises
    :class:`RegistryRefused`, a busy service :class:`RegistryBusy`, no service
    ``nats.errors.NoRespondersError``."""
    msg = await bus.nc.request(
        subjects.register_request(stream_id),
        request.model_dump_json(exclude_none=True).encode(),
        timeout=wait_s,
    )
    reply = RegistryReply.model_validate_json(msg.data)
    if reply.status >= 500:
        raise RegistryBusy(reply.error or f"status {reply.status}")
    if reply.status >= 400:
        raise RegistryRefused(reply.status, reply.error)
    return reply


async def register_stream(
    bus: Bus, registration: StreamRegistration, reserve: int = 0
) -> tuple[StreamRegistered, bool, int | None]:
    """Register a stream through the registry service, reserving ``reserve`` frame numbers:
    (record, whether it existed, first reserved number or None). Without a registry service
    on the bus (a bus with no ingest yet), a user who may write the registry (the admin)
    writes it directly; an edge cannot, and waits as through an outage."""
    stream_id = registration.stream_id or derive_stream_id(registration.device_name)
    try:
        reply = await registry_call(
            bus, stream_id, RegistryRequest(op="register", registration=registration, count=reserve)
        )
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        record, existed = await register(
            bus.js, await bus.js.key_value(subjects.KV_STREAMS), registration
        )
        first = None
        if reserve:
            first = await reserve_seq(await bus.js.key_value(subjects.KV_SEQ), stream_id, reserve)
        return record, existed, first
    assert reply.registered is not None
    return reply.registered, reply.existed, reply.first_seq


async def reserve_frames(bus: Bus, stream_id: str, count: int) -> int:
    """Reserve ``count`` consecutive frame numbers of ``stream_id``; returns the first."""
    try:
        reply = await registry_call(bus, stream_id, RegistryRequest(op="reserve", count=count))
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        return await reserve_seq(await bus.js.key_value(subjects.KV_SEQ), stream_id, count)
    assert reply.first_seq is not None
    return reply.first_seq


async def release_frames(bus: Bus, stream_id: str, reserved_end: int, next_seq: int) -> bool:
    """Give back the unused tail of a reservation (see :func:`release_seq`)."""
    if next_seq >= reserved_end:
        return False
    request = RegistryRequest(op="release", reserved_end=reserved_end, next_seq=next_seq)
    try:
        return (await registry_call(bus, stream_id, request)).released
    except nats.errors.NoRespondersError:
        _no_registry_service(bus)
        kv = await bus.js.key_value(subjects.KV_SEQ)
        return await release_seq(kv, stream_id, reserved_end, next_seq)


async def clock_offset_s(bus: Bus, stream_id: str, wait_s: float = 2.0) -> float:
    """How far this machine's clock is behind the server's, in seconds: the server's time
    against the middle of the round trip (positive: this clock is behind)."""
    sent_ns = time.time_ns()
    reply = await registry_call(bus, stream_id, RegistryRequest(op="clock"), wait_s)
    return (reply.server_time_ns - (sent_ns + time.time_ns()) // 2) / 1e9
