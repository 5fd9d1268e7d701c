"""Users of the bus and what each may publish and subscribe to: the nats-server configuration
``vertac run`` writes (``<data-dir>/nats.conf``), with passwords in ``<data-dir>/nats.secrets``.

- ``admin`` (``vertac run`` itself, ``vertac bus init``, the CLI): everything.
- ``ingest``, ``cycles``, ``analysis``, ``alerts``, ``gateway``: each its own subjects and the
  JetStream calls it makes, nothing more: the channels the catalogue (``schemas/catalogue.py``)
  says it publishes, listens to or answers, and (:data:`GRANTS`) consumers on the streams it reads
  (the rows of :data:`services.common.subscriptions.SUBSCRIPTIONS` and its own reads), the
  buckets it reads or writes, the subjects it publishes, its dead letters and its own replies.
  Every service may read the bus's layout (stream and consumer information); none may create,
  change, purge or delete a stream (only the object stores it writes may be purged by subject,
  which replacing an object needs).
- ``edge-<stream>``: publishes its stream's samples, registry requests
  (``vertac.register.<stream>``, answered by ingest) and status only. It reads no bucket and no
  stream: the registry service validates what it asks and writes the registry.
- Each user receives replies on its own inbox prefix, ``_INBOX.<user>.`` (see
  :func:`edge.client.inbox_prefix`), and subscribes nowhere else unless granted: no one
  reads another's replies.
- No one else connects: there is no anonymous user.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edge.client import inbox_prefix
from schemas import catalogue, subjects
from services.common.auth import read_secrets, write_secret
from services.common.sites import imports_of
from services.common.subscriptions import SUBSCRIPTIONS
from services.federation import LEAF_PREFIX, LeafUsers, leaf_permissions, leaf_user

SERVICES = catalogue.SERVICES
ADMIN = "admin"

# what every service may ask about the layout of the bus: read-only, no data
_LAYOUT = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.LIST.*",
]


def edge_user(stream_id: str) -> str:
    return f"edge-{subjects.check_stream_id(stream_id)}"


def _reads(stream: str) -> list[str]:
    """Consumers of its own on ``stream``: made, fetched from, acknowledged (not deleted: that
    would take another service's durable away); and reading one message of it by sequence or
    subject (how key-value and object reads work)."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


@dataclass(frozen=True)
class Grant:
    """What one service reads and writes on the bus besides its channels (what it publishes,
    listens to and answers comes from the catalogue, ``schemas/catalogue.py``) and the
    consumers of its subscriptions."""

    reads: tuple[str, ...] = ()  # JetStream streams it reads with consumers of its own
    direct_reads: tuple[str, ...] = ()  # streams it reads message by message, no consumer
    kv_reads: tuple[str, ...] = ()
    kv_writes: tuple[str, ...] = ()
    objects_read: tuple[str, ...] = ()
    objects_written: tuple[str, ...] = ()


GRANTS: dict[str, Grant] = {
    # and the registry service: validates edges' registrations, writes the registry
    "ingest": Grant(kv_writes=(subjects.KV_STREAMS, subjects.KV_SEQ)),
    "cycles": Grant(
        kv_reads=(subjects.KV_STREAMS,),
        # its cycle state, the streams' cycle settings (operators set them by request), leases
        kv_writes=(subjects.KV_CYCLE_STATE, subjects.KV_CYCLE_CONFIG, subjects.KV_LEASES),
        objects_read=(subjects.OBJ_UPLOADS,),  # the files of dataset imports
        objects_written=(subjects.OBJ_CYCLES,),
    ),
    "analysis": Grant(kv_reads=(subjects.KV_STREAMS,), objects_read=(subjects.OBJ_CYCLES,)),
    "alerts": Grant(
        # its rules (operators change them by request), their state, leases
        kv_writes=(subjects.KV_ALERT_RULES, subjects.KV_ALERT_STATE, subjects.KV_LEASES),
    ),
    "gateway": Grant(
        reads=(subjects.SAMPLES.name,),  # the last seconds of a stream (charts, recent)
        direct_reads=(subjects.CYCLES.name,),  # the newest cycle event of a stream
        # the registry (ingest's), cycle settings (cycles'), alert rules (alerts'): changes
        # to them are requests to their owners
        kv_reads=(subjects.KV_STREAMS, subjects.KV_CYCLE_CONFIG, subjects.KV_ALERT_RULES),
        kv_writes=(subjects.KV_SEQ,),  # frame numbers of REST batches (a shared counter)
        objects_read=(subjects.OBJ_CYCLES,),  # recordings of cycles (charts, reports)
        objects_written=(subjects.OBJ_UPLOADS,),
    ),
}


PUBLISHED_BUCKETS: dict[str, str] = {
    subjects.KV_STREAMS: "ingest",  # the stream registry
    subjects.KV_CYCLE_CONFIG: "cycles",  # how each stream's cycles start and end
    subjects.OBJ_CYCLES: "cycles",  # the recordings of finished cycles
    subjects.KV_ALERT_RULES: "alerts",  # the alert rules
    subjects.OBJ_UPLOADS: "gateway",  # files of dataset imports, handed to the cycles service
}
"""The buckets and object stores whose owner publishes them (as PostgreSQL's ``api`` views):
other services may read them, never write. Every other bucket is its owner's private state
(cycle and alert states): no other service may even read it."""


def _edge_permissions(stream_id: str) -> dict[str, object]:
    # frames, registry requests (the ingest service validates them and writes the registry)
    # and status: no bucket, no stream read, no API but the account's own limits
    return {
        "publish": {"allow": [*catalogue.publishes(edge_user(stream_id)), "$JS.API.INFO"]},
        "subscribe": {"allow": [f"{inbox_prefix(edge_user(stream_id))}.>"]},
    }


def _service_permissions(service: str, sites: tuple[str, ...] = ()) -> dict[str, object]:
    g = GRANTS[service]
    streams = {row.stream for row in SUBSCRIPTIONS if row.service == service} | set(g.reads)
    if imports_of(service) or service == "gateway":
        # central: the owner of a kind reads it from each site's stream; the gateway, what
        # arrives of a stream that viewers watch live
        streams |= {subjects.site_stream(site) for site in sites}
    allow = list(_LAYOUT) + catalogue.publishes(service)
    for stream in sorted(streams):
        allow += _reads(stream)
    for stream in sorted(set(g.direct_reads) - streams):
        allow += [f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]
    for bucket in sorted(set(g.kv_reads) | set(g.kv_writes)):
        allow += _reads(f"KV_{bucket}")
    # the lease bucket is shared by the partitioned services: each writes its own keys only
    allow += [
        f"$KV.{bucket}.{service}.>" if bucket == subjects.KV_LEASES else f"$KV.{bucket}.>"
        for bucket in g.kv_writes
    ]
    for store in sorted(set(g.objects_read) | set(g.objects_written)):
        allow += _reads(f"OBJ_{store}")
    for store in g.objects_written:
        allow += [f"$O.{store}.>", f"$JS.API.STREAM.PURGE.OBJ_{store}"]
    permissions: dict[str, object] = {
        "publish": {"allow": allow},
        "subscribe": {"allow": [f"{inbox_prefix(service)}.>", *catalogue.subscribes(service)]},
    }
    if catalogue.responds(service):
        permissions["allow_responses"] = True
    return permissions


def server_config(passwords: Mapping[str, str], sites: tuple[str, ...] = ()) -> str:
    """The ``authorization`` block of nats-server for these users (JSON is valid NATS config);
    at a central VerTac the services may also read the streams of ``sites``."""
    users = []
    for user, password in sorted(passwords.items()):
        entry: dict[str, object] = {"user": user, "password": password}
        if user in SERVICES:
            entry["permissions"] = _service_permissions(user, sites)
        elif user.startswith("edge-"):
            entry["permissions"] = _edge_permissions(user.removeprefix("edge-"))
        elif user.startswith(LEAF_PREFIX):  # a site's leaf node, at central: nothing else
            entry["permissions"] = leaf_permissions(user.removeprefix(LEAF_PREFIX))
            entry["allowed_connection_types"] = ["LEAFNODE"]
        elif user != ADMIN:
            raise ValueError(f"unknown bus user {user!r}")
        users.append(entry)
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"


def url_for(url: str, user: str, password: str) -> str:
    """``nats://host:port`` with the user's name and password in it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


class BusUsers:
    """The passwords of the bus users, kept in a file (mode 600), and the config made of them."""

    def __init__(self, secrets_file: Path, config_file: Path) -> None:
        self.secrets_file = secrets_file
        self.config_file = config_file

    def passwords(self) -> dict[str, str]:
        return read_secrets(self.secrets_file)

    @property
    def sites_file(self) -> Path:
        return self.secrets_file.with_name("nats.sites")

    @property
    def leaf_users(self) -> LeafUsers:
        """The sites' leaf-node sign-ins at central, kept beside the secrets."""
        return LeafUsers(self.secrets_file.with_name("leaf.secrets"))

    def ensure(self, *users: str, sites: tuple[str, ...] | None = None) -> dict[str, str]:
        """Passwords for ``users`` (made when missing), written with the config; ``sites``
        (central's, kept beside the secrets; None: those kept) are what its services read."""
        known = self.passwords()
        for user in (ADMIN, *SERVICES, *users):
            known.setdefault(user, secrets.token_urlsafe(24))
        write_secret(self.secrets_file, json.dumps(known))
        if sites is None:
            kept = self.sites_file.read_text().split() if self.sites_file.is_file() else []
            sites = tuple(kept)
        else:
            self.sites_file.write_text("".join(f"{site}\n" for site in sites))
        # each site's leaf node signs in as a user of its own, held to that site's data
        signins = self.leaf_users.ensure(sites) if sites else {}  # with former sites
        leaves = {leaf_user(site): signins[leaf_user(site)] for site in sites}
        write_secret(self.config_file, server_config({**known, **leaves}, sites))
        return known
