"""Sites and a central VerTac, federated over NATS: leaf nodes and JetStream sourcing, no sync of
our own.

A site is a whole VerTac that runs alone; its nats-server is also a leaf node of central's, in a
JetStream domain named by the site id. Central keeps one stream per site,
``VERTAC_SITE_<site>``, that *sources* the site's streams through the site's domain
(``$JS.<site>.API``), each through a subject transform that puts the site id in front:
``vertac.samples.press-1.3`` at site ``north`` is ``vertac.north.samples.press-1.3`` at central.
Stream ids of two sites therefore never clash, and JetStream keeps the source's position: after
a link outage central takes up where it stopped, in order, each message once.

The leaf connection carries JetStream's API and deliveries only: no ``vertac.>`` subject crosses
it (denied both ways), so a site's live traffic stays in the site, and central's own streams
never capture a site's subjects. Central holds each site's leaf user to that site's own
deliveries, domain and commands stream (:func:`leaf_permissions`), so a site cannot read
another site's data through central, whatever its own configuration says.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import ExternalStream, StreamConfig, StreamSource, SubjectTransform
from nats.js.errors import NotFoundError

from schemas import catalogue, subjects
from services.common.auth import read_secrets, write_secret

SITE_PATTERN: Final = subjects.SITE_PATTERN
COMMANDS_MAX_AGE_S: Final = 3600.0  # a command central sent that the site did not take by then
CENTRAL_DOMAIN: Final = "central"

SHARED: Final[dict[str, str]] = {
    "samples": subjects.SAMPLES.name,
    "registry": subjects.CONTROL.name,  # only its registrations: commands stay in the site
    "cycles": subjects.CYCLES.name,
    "analysis": subjects.ANALYSIS.name,
    "alerts": subjects.ALERTS.name,
}
"""What central takes from a site: each kind of the bus, from the site's stream that keeps it."""


class InvalidSite(ValueError):
    pass


def check_site(site: str) -> str:
    """A site id: lower-case letters, digits, ``_`` and ``-``, up to 32, not a channel's kind
    nor the central domain (it is a subject token and a JetStream domain)."""
    if not re.fullmatch(SITE_PATTERN, site):
        raise InvalidSite(
            f"site id {site!r} is not valid: 1-32 of a-z, 0-9, '_', '-', starting with a letter "
            "or digit"
        )
    reserved = {c.kind for c in catalogue.CHANNELS} | {CENTRAL_DOMAIN}
    if site in reserved:
        raise InvalidSite(f"site id {site!r} is reserved; choose another")
    return site


def site_stream(site: str) -> str:
    """Central's stream of one site's data."""
    return subjects.site_stream(check_site(site))


def commands_stream(site: str) -> str:
    """Central's stream of the commands it sends to one site."""
    return f"VERTAC_SITE_{check_site(site)}_COMMANDS"


def deliver_prefix(site: str, way: str) -> str:
    """Where JetStream delivers what crosses a site's leaf link: ``data`` toward central,
    ``commands`` toward the site; one prefix per site, so central's permissions hold each site
    to its own."""
    return f"vertac-site.{check_site(site)}.{way}"


DATA_STREAMS: Final = (*dict.fromkeys(SHARED.values()), subjects.DIGEST.name)
"""The site's streams central sources."""


def leaf_permissions(site: str) -> dict[str, object]:
    """What a site's leaf connection may do at central, enforced by central (whatever the
    site's own configuration says). Seen from central: ``publish`` is what the site may send
    in, ``subscribe`` what central sends out to it.

    - In: its own data, delivered to ``vertac-site.<site>.data``; the JetStream API of its own
      commands stream only (to take the commands, never to change the stream); the replies of
      JetStream's own requests (``$JSC.R``) and flow control of its commands.
    - Out: central's API requests to the site's domain, its commands, replies, and the flow
      control of what it sends.

    No ``vertac.>`` subject, no other site's domain, deliveries or streams, and nothing of
    central's own JetStream API reaches it: a site reads nothing of another site at central.
    """
    commands = commands_stream(site)
    api = f"$JS.{CENTRAL_DOMAIN}.API"
    return {
        "publish": {
            "allow": [
                f"{deliver_prefix(site, 'data')}.>",
                f"{api}.CONSUMER.CREATE.{commands}",
                f"{api}.CONSUMER.CREATE.{commands}.>",
                f"{api}.CONSUMER.DELETE.{commands}.>",
                f"{api}.CONSUMER.INFO.{commands}.>",
                f"{api}.STREAM.INFO.{commands}",
                f"$JS.FC.{commands}.>",
                f"$JS.FC.{CENTRAL_DOMAIN}.*.{commands}.>",
                "$JSC.R.>",
            ]
        },
        "subscribe": {
            "allow": [
                f"$JS.{check_site(site)}.API.>",
                f"{deliver_prefix(site, 'commands')}.>",
                "$JSC.R.>",
                *(f"$JS.FC.{stream}.>" for stream in DATA_STREAMS),
                f"$JS.FC.{site}.*.>",
            ]
        },
    }


def commands_source(site: str) -> StreamSource:
    """How a site's ``VERTAC_CONTROL`` takes central's commands for it: sourced through
    central's domain, each ``vertac.<site>.control.<stream_id>`` stored as the site's own
    ``vertac.control.<stream_id>.<partition>``, where its cycles service reads commands, and
    each ``vertac.<site>.alertctl.<stream_id>.ack`` as ``vertac.alertack.<stream_id>.<p>``,
    where its alerts service reads acknowledgements, and each
    ``vertac.<site>.refctl.<stream_id>.create`` as ``vertac.refpush.<stream_id>.<p>``, where
    its analysis service makes the reference."""
    return StreamSource(
        name=commands_stream(site),
        external=ExternalStream(
            api=f"$JS.{CENTRAL_DOMAIN}.API", deliver=deliver_prefix(site, "commands")
        ),
        subject_transforms=[
            SubjectTransform(
                src=f"{subjects.PREFIX}.{site}.{kind}",
                dest=f"{subjects.PREFIX}.{local}.{{{{wildcard(1)}}}}"
                f".{{{{partition({subjects.PARTITIONS},1)}}}}",
            )
            for kind, local in (
                ("control.*", "control"),
                ("alertctl.*.ack", "alertack"),
                ("refctl.*.create", "refpush"),
            )
        ],
    )


def site_subject(site: str, kind: str) -> str:
    """Where central keeps a site's messages of one kind, e.g. ``vertac.north.samples.>``."""
    return f"{subjects.PREFIX}.{check_site(site)}.{kind}.>"


def site_leaf_remote(url: str, credentials: str | None = None, ca: Path | None = None) -> str:
    """A site's ``leafnodes.remotes`` entry toward central at ``url`` (``nats-leaf://user:pass@
    host:7422``, or ``tls://`` verifying central's certificate against ``ca``): JetStream's API
    and deliveries cross it, no ``vertac.>`` subject does, either way."""
    entry: dict[str, object] = {
        "url": url,
        "deny_imports": [f"{subjects.PREFIX}.>"],
        "deny_exports": [f"{subjects.PREFIX}.>"],
    }
    if credentials:
        entry["credentials"] = credentials
    if ca is not None:
        entry["tls"] = {"ca_file": str(ca)}
    return json.dumps(entry)


SAMPLE_MODES: Final = ("full", "digest", "none")
"""What central takes of a site's samples: every frame, each frame's digest (each sensor's
lowest and highest sample: a fraction of the bytes, peaks kept), or none."""


@dataclass(frozen=True)
class SiteLink:
    """What central takes from one site."""

    site: str
    kinds: tuple[str, ...] = tuple(SHARED)
    max_age_s: float = 7 * 86400.0  # what central keeps of it, as a site keeps its raw frames
    samples: str = "full"  # one of SAMPLE_MODES

    def _source(self, stream: str, kind: str, dest_kind: str) -> StreamSource:
        return StreamSource(
            name=stream,
            external=ExternalStream(
                api=f"$JS.{check_site(self.site)}.API",
                deliver=deliver_prefix(self.site, "data"),
            ),
            subject_transforms=[
                SubjectTransform(src=subjects.all_of(kind), dest=site_subject(self.site, dest_kind))
            ],
        )

    def stream_config(self) -> StreamConfig:
        unknown = set(self.kinds) - set(SHARED)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)}; of {', '.join(SHARED)}")
        if self.samples not in SAMPLE_MODES:
            raise ValueError(f"samples {self.samples!r}: one of {', '.join(SAMPLE_MODES)}")
        sources = []
        for kind in self.kinds:
            if kind != "samples":
                sources.append(self._source(SHARED[kind], kind, kind))
            elif self.samples == "full":
                sources.append(self._source(subjects.SAMPLES.name, "samples", "samples"))
            elif self.samples == "digest":  # stored at central as the site's samples
                sources.append(self._source(subjects.DIGEST.name, "digest", "samples"))
        taken = [k if k != "samples" else f"samples ({self.samples})" for k in self.kinds]
        return StreamConfig(
            name=site_stream(self.site),
            description=f"VerTac site {self.site}: its {', '.join(taken)}, sourced",
            sources=sources,
            max_age=self.max_age_s,
            allow_direct=True,  # the gateway reads a stream's last seconds message by message
        )


async def link_site(js: JetStreamContext, link: SiteLink) -> str:
    """Declare (or update) central's streams of a site on central's bus, the site's data and
    the commands for it; idempotent: "created", "updated" or "unchanged" (of the data)."""
    commands = StreamConfig(
        name=commands_stream(link.site),
        description=f"Commands central sends to site {link.site} (it sources them)",
        subjects=[
            f"{subjects.PREFIX}.{link.site}.control.>",
            f"{subjects.PREFIX}.{link.site}.alertctl.>",
            f"{subjects.PREFIX}.{link.site}.refctl.>",
        ],
        max_age=COMMANDS_MAX_AGE_S,
        duplicate_window=120.0,
    )
    try:
        await js.stream_info(commands.name or "")
    except NotFoundError:
        await js.add_stream(commands)
    config = link.stream_config()
    assert config.name is not None
    try:
        current = (await js.stream_info(config.name)).config
    except NotFoundError:
        await js.add_stream(config)
        return "created"
    have = sorted(source_key(s) for s in current.sources or [])
    want = sorted(source_key(s) for s in config.sources or [])
    if have == want and current.max_age == config.max_age:
        return "unchanged"
    await js.update_stream(config)
    return "updated"


def source_key(source: StreamSource) -> str:
    """What makes two sources the same: stream, transforms and where they are delivered."""
    ext = source.external or ExternalStream(api="", deliver="")
    return f"{source.name} {source.subject_transforms} {ext.api} {ext.deliver}"


LEAF_PREFIX: Final = "site-"


def leaf_user(site: str) -> str:
    """The user a site's leaf node signs in to central with."""
    return f"{LEAF_PREFIX}{check_site(site)}"


class LeafUsers:
    """Central's passwords of the sites' leaf-node users, kept in a file (mode 600)."""

    def __init__(self, secrets_file: Path) -> None:
        self.secrets_file = secrets_file

    def passwords(self) -> dict[str, str]:
        return read_secrets(self.secrets_file)

    def ensure(self, sites: tuple[str, ...]) -> dict[str, str]:
        """``{leaf user: password}`` of ``sites`` (made when missing, kept for the others)."""
        known = self.passwords()
        for site in sites:
            known.setdefault(leaf_user(site), secrets.token_urlsafe(24))
        write_secret(self.secrets_file, json.dumps(known))
        return known

    def url(self, site: str, host: str, port: int) -> str:
        """The URL a site gives ``vertac run --central``."""
        return f"nats-leaf://{leaf_user(site)}:{self.passwords()[leaf_user(site)]}@{host}:{port}"
