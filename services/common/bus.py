"""Connecting to NATS and declaring the JetStream layout (``vertac bus init``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError

from edge.client import (
    BusLayoutError,
    PlacementPending,
)
from schemas import subjects
from services.common.config import CommonSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


_LIMIT_SETTINGS = {
    subjects.SAMPLES.name: "VERTAC_SAMPLES_MAX_BYTES",
}


def _refused(name: str, exc: APIError, settings: CommonSettings) -> BusLayoutError:
    setting = _LIMIT_SETTINGS.get(name, "VERTAC_EVENTS_MAX_BYTES")
    limit = (
        settings.samples_max_bytes if name == subjects.SAMPLES.name else settings.events_max_bytes
    )
    hint = ""
    if exc.err_code == 10005 or "suitable peers" in (exc.description or ""):
        return PlacementPending(
            f"NATS refused stream {name}: {exc.description}; the cluster is still forming, or it "
            f"has fewer JetStream servers than VERTAC_BUS_REPLICAS={settings.bus_replicas}"
        )
    if exc.err_code in (10047, 10028) or "storage" in (exc.description or "").lower():
        hint = (
            f"; the server has less JetStream storage than stream {name} may use "
            f"({limit} bytes): lower {setting} or give nats-server more (jetstream max_file_store)"
        )
    return BusLayoutError(f"NATS refused stream {name}: {exc.description}{hint}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_age_s: float
    max_bytes: int


def _sources_of(stream: str, settings: CommonSettings) -> list[StreamSource] | None:
    """A site's control stream also takes the commands central sends it."""
    if stream != subjects.CONTROL.name or not settings.site:
        return None
    from services.federation import commands_source

    return [commands_source(settings.site)]


def _source_names(config: StreamConfig) -> list[str]:
    from services.federation import source_key

    return sorted(source_key(s) for s in config.sources or [])


def stream_configs(settings: CommonSettings) -> list[StreamConfig]:
    """The JetStream streams VerTac uses, with explicit limits."""
    samples = Limits(settings.samples_max_age_s, settings.samples_max_bytes)
    events = Limits(settings.events_max_age_s, settings.events_max_bytes)
    chosen = {
        subjects.SAMPLES.name: (samples, "Sample frames of every stream"),
        subjects.CONTROL.name: (events, "Commands and stream registrations"),
        subjects.CYCLES.name: (events, "Cycle lifecycle events"),
        subjects.ANALYSIS.name: (events, "Post-cycle analysis results"),
        subjects.ALERTS.name: (events, "Alert events"),
        subjects.DEAD_LETTER.name: (events, "Messages no service could process, with the reason"),
        subjects.DIGEST.name: (samples, "Digests of the sample frames (each sensor's extremes)"),
    }
    partitioned = {
        subjects.SAMPLES.name: SubjectTransform(
            src=f"{subjects.PREFIX}.samples.*",
            dest=f"{subjects.PREFIX}.samples.{{{{wildcard(1)}}}}"
            f".{{{{partition({subjects.PARTITIONS},1)}}}}",
        ),
        subjects.CONTROL.name: SubjectTransform(
            src=f"{subjects.PREFIX}.*.*",
            dest=f"{subjects.PREFIX}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
            f".{{{{partition({subjects.PARTITIONS},2)}}}}",
        ),
    }
    configs = []
    for js_stream in subjects.ALL_STREAMS:
        limits, description = chosen[js_stream.name]
        configs.append(
            StreamConfig(
                name=js_stream.name,
                description=description,
                subjects=list(js_stream.subjects),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                max_age=limits.max_age_s,
                max_bytes=limits.max_bytes,
                max_msg_size=8 * 1024 * 1024,
                duplicate_window=settings.duplicate_window_s,
                num_replicas=settings.bus_replicas,
                subject_transform=partitioned.get(js_stream.name),
                allow_direct=js_stream.name in subjects.DIRECT_READ_STREAMS or None,
                sources=_sources_of(js_stream.name, settings),
            )
        )
    return configs


def _transform(config: StreamConfig) -> tuple[str | None, str | None] | None:
    t = config.subject_transform
    return None if t is None else (t.src, t.dest)


def _not_made(name: str, action: str) -> PlacementPending:
    # a closed bus drops a request its user may not make: it times out rather than failing
    return PlacementPending(
        f"NATS did not {action} {name} in time: on a closed bus only its admin may (run "
        "`vertac bus init` first, as the deploy/ migrate job does), or JetStream is still "
        "electing a leader"
    )


async def _made(name: str, creating: Awaitable[T]) -> T:
    try:
        return await creating
    except TimeoutError as exc:
        raise _not_made(name, "create") from exc


async def _allow_direct(js: JetStreamContext, name: str) -> str:
    """Let a bucket made by an earlier release answer direct gets."""
    config = (await js.stream_info(name)).config
    if config.allow_direct:
        return "unchanged"
    config.allow_direct = True
    try:
        await js.update_stream(config)
    except TimeoutError as exc:
        raise _not_made(f"stream {name}", "update") from exc
    return "updated"


async def init_bus(js: JetStreamContext, settings: CommonSettings) -> dict[str, str]:
    """Create or update every stream, KV bucket and object store; idempotent.

    Returns what was done per name ("created", "updated" or "unchanged").
    """
    done: dict[str, str] = {}
    for config in stream_configs(settings):
        assert config.name is not None
        try:
            current = await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except APIError as exc:
                raise _refused(config.name, exc, settings) from exc
            except TimeoutError as exc:
                raise _not_made(f"stream {config.name}", "create") from exc
            done[config.name] = "created"
            continue
        existing = current.config
        same = (
            existing.subjects == config.subjects
            and existing.max_age == config.max_age
            and existing.max_bytes == config.max_bytes
            and existing.duplicate_window == config.duplicate_window
            and existing.num_replicas == config.num_replicas
            and existing.max_msg_size == config.max_msg_size
            and _transform(existing) == _transform(config)
            and bool(existing.allow_direct) == bool(config.allow_direct)
            and _source_names(existing) == _source_names(config)
        )
        if not same:
            try:
                await js.update_stream(config)
            except APIError as exc:
                raise _refused(config.name, exc, settings) from exc
            except TimeoutError as exc:
                raise _not_made(f"stream {config.name}", "update") from exc
        done[config.name] = "unchanged" if same else "updated"
    for bucket in subjects.ALL_KV:
        direct = bucket in subjects.DIRECT_READ_BUCKETS
        try:
            await js.key_value(bucket)
            done[bucket] = "unchanged"
            if direct:
                done[bucket] = await _allow_direct(js, f"KV_{bucket}")
        except BucketNotFoundError:
            await _made(
                f"bucket {bucket}",
                js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket,
                        history=5,
                        direct=direct or None,
                        replicas=settings.bus_replicas,
                        storage=StorageType.FILE,
                    )
                ),
            )
            done[bucket] = "created"
    try:
        await js.key_value(subjects.KV_LEASES)
        done[subjects.KV_LEASES] = await _allow_direct(js, f"KV_{subjects.KV_LEASES}")
    except BucketNotFoundError:
        await _made(
            f"bucket {subjects.KV_LEASES}",
            js.create_key_value(
                KeyValueConfig(
                    bucket=subjects.KV_LEASES,
                    history=1,
                    direct=True,
                    ttl=subjects.LEASE_TTL_S,
                    replicas=settings.bus_replicas,
                    storage=StorageType.FILE,
                )
            ),
        )
        done[subjects.KV_LEASES] = "created"
    for store in subjects.ALL_OBJECT_STORES:
        try:
            await js.object_store(store)
            done[store] = "unchanged"
        except (BucketNotFoundError, NotFoundError):
            await _made(
                f"object store {store}",
                js.create_object_store(
                    store,
                    ObjectStoreConfig(replicas=settings.bus_replicas, storage=StorageType.FILE),
                ),
            )
            done[store] = "created"
    return done
