"""The one place where NATS subject names, JetStream stream names and bucket names are built.

Every subject is ``vertac.<kind>.<stream_id>[.<detail>]``. A stream id is a single NATS token
(letters, digits, ``_`` and ``-``), so wildcards such as ``vertac.samples.*`` always work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "vertac"
STREAM_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)

CYCLE_EVENTS: Final = ("started", "completed", "aborted")
SEVERITIES: Final = ("info", "warning", "critical")


class InvalidStreamId(ValueError):
    """A stream id that cannot be a NATS subject token."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(
            f"stream_id {stream_id!r} must match {STREAM_ID_PATTERN} "
            "(letters, digits, '_' or '-', at most 64 characters)"
        )
        self.stream_id = stream_id


def check_stream_id(stream_id: str) -> str:
    """Return ``stream_id`` unchanged, or raise :class:`InvalidStreamId` (:class:`SiteStream`
    for a site's stream at central: no local subject names it)."""
    if not _STREAM_ID.fullmatch(stream_id):
        if _ANY_STREAM_ID.fullmatch(stream_id):
            raise SiteStream(stream_id)
        raise InvalidStreamId(stream_id)
    return stream_id


SITE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # a site id of a federation
ANY_STREAM_ID_PATTERN: Final = r"^([a-z0-9][a-z0-9_-]{0,31}\.)?[A-Za-z0-9_-]{1,64}$"
"""A stream id as stored and shown: a local one, or at central a site's ``<site>.<stream_id>``
(the subject tokens it came on: ``vertac.<site>.samples.<stream_id>``)."""
_ANY_STREAM_ID = re.compile(ANY_STREAM_ID_PATTERN)


class SiteStream(InvalidStreamId):
    """A site's stream at central (``<site>.<stream_id>``): what happens to it is decided at the
    site; central stores and shows it, and sends it cycle commands."""

    def __init__(self, stream_id: str) -> None:
        ValueError.__init__(
            self,
            f"stream {stream_id!r} is site {stream_id.split('.', 1)[0]!r}'s: central keeps its "
            "history, cycles, analyses and alerts and sends it cycle commands; its live data, "
            "settings, references and rules are at the site",
        )
        self.stream_id = stream_id


def check_any_stream_id(stream_id: str) -> str:
    """A local stream id or a site's qualified one, unchanged; else :class:`InvalidStreamId`."""
    if not _ANY_STREAM_ID.fullmatch(stream_id):
        raise InvalidStreamId(stream_id)
    return stream_id


def site_stream_id(site: str, stream_id: str) -> str:
    """The id central gives stream ``stream_id`` of site ``site``: ``<site>.<stream_id>``."""
    return f"{site}.{stream_id}"


def site_of(stream_id: str) -> tuple[str, str] | None:
    """``(site, stream_id at the site)`` of a site's stream at central; None for a local one."""
    site, dot, local = stream_id.partition(".")
    return (site, local) if dot else None


def samples(stream_id: str) -> str:
    """Subject of the sample frames of one stream."""
    return f"{PREFIX}.samples.{check_stream_id(stream_id)}"


def control(stream_id: str) -> str:
    """Subject of commands (cycle_start, cycle_stop, ...) for one stream."""
    return f"{PREFIX}.control.{check_stream_id(stream_id)}"


def _site(site: str) -> str:
    """``site`` when it is a valid site id (a subject token); ValueError otherwise."""
    if not re.fullmatch(SITE_PATTERN, site):
        raise ValueError(f"site id {site!r} is not valid")
    return site


def site_control(site: str, stream_id: str) -> str:
    """At central: a command for a stream of site ``site``; the site sources it into its own
    ``vertac.control.<stream_id>`` (see services/federation.py)."""
    return f"{PREFIX}.{_site(site)}.control.{check_stream_id(stream_id)}"


def site_stream(site: str) -> str:
    """At central: the JetStream stream of one site's data (it sources the site's streams)."""
    return f"VERTAC_SITE_{site}"


def site_data(site: str, kind: str, stream_id: str = "*") -> str:
    """At central: a site's messages of ``kind`` (``*``: every kind) of one stream (``*``:
    every stream), e.g. ``vertac.north.samples.press-1.>``."""
    return f"{PREFIX}.{site}.{kind}.{stream_id}.>"


def site_alert_ack(site: str, stream_id: str) -> str:
    """At central: an acknowledgement of an alert of a site's stream; the site sources it into
    its own ``vertac.alertack.<stream_id>`` (see services/federation.py)."""
    return f"{PREFIX}.{_site(site)}.alertctl.{check_stream_id(stream_id)}.ack"


def site_reference_push(site: str, stream_id: str) -> str:
    """At central: a new reference for a site's stream (made at the site from its cycles); the
    site sources it into its own ``vertac.refpush.<stream_id>``."""
    return f"{PREFIX}.{_site(site)}.refctl.{check_stream_id(stream_id)}.create"


def alert_ack(stream_id: str) -> str:
    """At a site: an acknowledgement central sent for one of the stream's alerts (stored in
    VERTAC_CONTROL; the alerts service carries it out)."""
    return f"{PREFIX}.alertack.{check_stream_id(stream_id)}"


def registry(stream_id: str) -> str:
    """Subject on which a stream's registration record is announced."""
    return f"{PREFIX}.registry.{check_stream_id(stream_id)}"


def register_request(stream_id: str) -> str:
    """Subject of registry requests of one stream (answered by the ingest service; not stored)."""
    return f"{PREFIX}.register.{check_stream_id(stream_id)}"


def cycles(stream_id: str, event: str) -> str:
    """Subject of one cycle lifecycle event of one stream."""
    if event not in CYCLE_EVENTS:
        raise ValueError(f"cycle event {event!r} is not one of {CYCLE_EVENTS}")
    return f"{PREFIX}.cycles.{check_stream_id(stream_id)}.{event}"


def analysis(stream_id: str) -> str:
    """Subject of the post-cycle analysis results of one stream."""
    return f"{PREFIX}.analysis.{check_stream_id(stream_id)}"


def alerts(stream_id: str, severity: str) -> str:
    """Subject of alert events of one stream at one severity."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
    return f"{PREFIX}.alerts.{check_stream_id(stream_id)}.{severity}"


REFERENCE_OPS: Final = ("create", "activate", "dry_run", "list", "get")


def references(stream_id: str, op: str) -> str:
    """Request-reply subject of reference management (answered by the analysis service)."""
    if op not in REFERENCE_OPS:
        raise ValueError(f"reference operation {op!r} is not one of {REFERENCE_OPS}")
    return f"{PREFIX}.references.{check_stream_id(stream_id)}.{op}"


DATASET_OPS: Final = ("add", "remove", "import")


def dataset_stream_id(dataset: str) -> str:
    """The stream a dataset's imported cycles belong to unless another is named:
    ``batch-<dataset>``, with each character a stream id may not hold (``.``) as ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"batch-{dataset}")[:64]


def datasets(stream_id: str, op: str) -> str:
    """Request-reply subject of dataset operations on a stream's cycles (answered by the cycles
    service, which owns them)."""
    if op not in DATASET_OPS:
        raise ValueError(f"dataset operation {op!r} is not one of {DATASET_OPS}")
    return f"{PREFIX}.datasets.{check_stream_id(stream_id)}.{op}"


def dataset_requests() -> str:
    """Dataset requests of every stream and operation (the cycles service answers them)."""
    return f"{PREFIX}.datasets.*.*"


ALERT_OPS: Final = ("ack", "rule_put", "rule_delete")


def alert_control(stream_id: str, op: str) -> str:
    """Request-reply subject of alert operations (acknowledge an alert, create, replace or
    remove a rule), answered by the alerts service, which owns alerts and rules."""
    if op not in ALERT_OPS:
        raise ValueError(f"alert operation {op!r} is not one of {ALERT_OPS}")
    return f"{PREFIX}.alertctl.{check_stream_id(stream_id)}.{op}"


CYCLE_OPS: Final = ("config",)


def cycle_control(stream_id: str, op: str) -> str:
    """Request-reply subject of a stream's cycle settings (``config``: how its cycles start and
    end), answered by the cycles service, which owns them."""
    if op not in CYCLE_OPS:
        raise ValueError(f"cycle operation {op!r} is not one of {CYCLE_OPS}")
    return f"{PREFIX}.cyclectl.{check_stream_id(stream_id)}.{op}"


def cycles_of(stream_id: str) -> str:
    """Every cycle lifecycle event of one stream (a subscription)."""
    return f"{PREFIX}.cycles.{check_stream_id(stream_id)}.*"


def alerts_of(stream_id: str) -> str:
    """Alert events of one stream at every severity (a subscription)."""
    return f"{PREFIX}.alerts.{check_stream_id(stream_id)}.*"


def register_requests() -> str:
    """Registry requests of every stream (the ingest service answers them)."""
    return f"{PREFIX}.register.*"


def reference_requests() -> str:
    """Reference requests of every stream and operation (the analysis service answers them)."""
    return f"{PREFIX}.references.*.*"


def alert_requests() -> str:
    """Alert operations of every stream (the alerts service answers them)."""
    return f"{PREFIX}.alertctl.*.*"


def cycle_requests() -> str:
    """Cycle settings requests of every stream (the cycles service answers them)."""
    return f"{PREFIX}.cyclectl.*.*"


def edge_status(stream_id: str) -> str:
    """Subject on which an edge agent publishes its buffer status every few seconds."""
    return f"{PREFIX}.edge.{check_stream_id(stream_id)}.status"


def dead_letter(service: str) -> str:
    """Subject on which ``service`` parks messages it cannot process."""
    return f"{PREFIX}.dlq.{service}"


def all_of(kind: str) -> str:
    """Wildcard subject covering every stream of one kind, e.g. ``vertac.samples.>``."""
    return f"{PREFIX}.{kind}.>"


def stream_of(subject: str) -> str:
    """The stream id token of a ``vertac.<kind>.<stream_id>...`` subject."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != PREFIX:
        raise ValueError(f"subject {subject!r} is not a vertac stream subject")
    return parts[2]


def dedup_id(stream_id: str, seq: int) -> str:
    """The ``Nats-Msg-Id`` of frame ``seq``: JetStream drops a repeat within its window."""
    return f"{stream_id}:{seq}"


@dataclass(frozen=True, slots=True)
class JetStreamName:
    """A JetStream stream and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]


SAMPLES: Final = JetStreamName("VERTAC_SAMPLES", (all_of("samples"),))
CONTROL: Final = JetStreamName(
    "VERTAC_CONTROL",
    (all_of("control"), all_of("registry"), all_of("alertack"), all_of("refpush")),
)
CYCLES: Final = JetStreamName("VERTAC_CYCLES", (all_of("cycles"),))
ANALYSIS: Final = JetStreamName("VERTAC_ANALYSIS", (all_of("analysis"),))
ALERTS: Final = JetStreamName("VERTAC_ALERTS", (all_of("alerts"),))
DEAD_LETTER: Final = JetStreamName("VERTAC_DLQ", (all_of("dlq"),))
DIGEST: Final = JetStreamName("VERTAC_DIGEST", (all_of("digest"),))
ALL_STREAMS: Final = (SAMPLES, CONTROL, CYCLES, ANALYSIS, ALERTS, DEAD_LETTER, DIGEST)

# Per-stream work (cycle state machines, live alert rules) is split into PARTITIONS by stream id:
# JetStream stores ``vertac.samples.<id>`` as ``vertac.samples.<id>.<p>`` (a stream subject
# transform, p = FNV-1a of the id mod PARTITIONS, the same as nats-server's partition()), and
# the replicas of a service share the partitions through leases in KV_LEASES.
PARTITIONS: Final = 16
KV_LEASES: Final = "vertac_leases"
LEASE_TTL_S: Final = 6.0


def partition_of(stream_id: str, partitions: int = PARTITIONS) -> int:
    """The partition of ``stream_id``, as nats-server's ``{{partition(n,1)}}`` computes it."""
    h = 0x811C9DC5
    for byte in stream_id.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def digest(stream_id: str) -> str:
    """Subject of the digest of one stream's frames at a site (what central may take instead
    of every sample), with its partition token, as JetStream stores samples."""
    return f"{PREFIX}.digest.{check_stream_id(stream_id)}.{partition_of(stream_id)}"


def partition_subject(kind: str, partition: int) -> str:
    """Filter of one partition of a kind as JetStream stores it, e.g. ``vertac.samples.*.3``."""
    return f"{PREFIX}.{kind}.*.{partition}"


def stored(kind: str, stream_id: str) -> str:
    """Filter of one stream's messages as JetStream stores them (any partition suffix)."""
    return f"{PREFIX}.{kind}.{check_stream_id(stream_id)}.*"


KV_CYCLE_STATE: Final = "vertac_cycle_state"
KV_SEQ: Final = "vertac_seq"
KV_STREAMS: Final = "vertac_streams"
KV_CYCLE_CONFIG: Final = "vertac_cycle_config"
KV_ALERT_RULES: Final = "vertac_alert_rules"
KV_ALERT_STATE: Final = "vertac_alert_state"
ALL_KV: Final = (
    KV_CYCLE_STATE,
    KV_SEQ,
    KV_STREAMS,
    KV_CYCLE_CONFIG,
    KV_ALERT_RULES,
    KV_ALERT_STATE,
)
# read with direct gets (no consumer per read): streams allow it, buckets as KV_<bucket>
DIRECT_READ_STREAMS: Final = (SAMPLES.name, CYCLES.name)
DIRECT_READ_BUCKETS: Final = (KV_STREAMS, KV_ALERT_RULES, KV_LEASES)
OBJ_CYCLES: Final = "vertac_cycles"
OBJ_REFERENCES: Final = "vertac_references"
OBJ_UPLOADS: Final = "vertac_uploads"  # files sent to a dataset import, until it is done
ALL_OBJECT_STORES: Final = (OBJ_CYCLES, OBJ_REFERENCES, OBJ_UPLOADS)

HEADER_CONTENT_TYPE: Final = "Content-Type"
HEADER_MSG_ID: Final = "Nats-Msg-Id"
HEADER_STATUS: Final = "Vertac-Status"  # the HTTP-like status of a request's reply
