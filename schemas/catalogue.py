"""The channels of the bus, declared once: subject, payload, where JetStream stores it, and who
publishes, listens and answers.

Generated from this table (and from the durable subscriptions of
``services/common/subscriptions.py``, which name their channel by kind):

- the AsyncAPI document (``schemas/asyncapi.py``, ``schemas/json/asyncapi.json``);
- what each bus user may publish and subscribe to (``services/natsauth.py``): a service
  publishes the channels that name it a publisher (its own dead letters only), subscribes to
  those it listens to or answers, and may reply when it answers one; an edge user publishes
  its own stream's subjects of the channels that name ``edge``;
- the subject table of the docs (``docs/concepts/bus.md``, written by ``vertac schemas export``).

Tests check that the generated files match and that code uses no subject this table does not
name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from schemas import frames, messages, subjects

EDGE: Final = "edge"  # an edge user (edge-<stream_id>): its own stream's subjects only
SERVICES: Final = ("ingest", "cycles", "analysis", "alerts", "gateway")


@dataclass(frozen=True)
class Channel:
    kind: str  # the subject's second token: vertac.<kind>...
    title: str
    address: str  # the subject, with {placeholders}
    payload: type[Any]
    description: str
    stored_in: str | None = None  # the JetStream stream that keeps it, or None (core NATS)
    publishers: tuple[str, ...] = ()  # bus users that publish (or send requests) on it
    listeners: tuple[str, ...] = ()  # services with core subscriptions (not durables) to it
    responder: str | None = None  # the service that answers its requests
    payload_doc: str = ""  # the payload column of the docs' table (default: the model's name)
    also: str = ""  # who else publishes, for the docs (any client with the admin's rights)

    def subject_for(self, user: str) -> str:
        """What ``user`` may publish on (edge: its stream's subjects; dead letters: its own)."""
        if user.startswith(f"{EDGE}-"):
            stream_id = user.removeprefix(f"{EDGE}-")
            return self.address.replace("{stream_id}", subjects.check_stream_id(stream_id))
        if self.kind == "dlq":
            return subjects.dead_letter(user)
        if self.kind == "site-control":  # at central: a command for any site's stream
            return f"{subjects.PREFIX}.*.control.*"
        if self.kind == "site-alertctl":  # at central: an acknowledgement for a site
            return f"{subjects.PREFIX}.*.alertctl.*.ack"
        if self.kind == "site-refctl":  # at central: a reference for a site
            return f"{subjects.PREFIX}.*.refctl.*.create"
        return subjects.all_of(self.kind)


_SAMPLES_DOC = (
    "Sample frames of one stream. Two encodings, told apart by the Content-Type header: "
    f"'{frames.CONTENT_TYPE_BINARY}' (b'VTF1', uint32 LE header length, msgpack header "
    "BinaryFrameHeader, then per sensor: int64 timestamps when dt == 0, values, uint8 qualities "
    "when q; or, for a frame whose sensors share one clock and are all good, b'VTF2', uint32 LE "
    "header length, msgpack header CompactFrameHeader with its SensorTable, then per sensor its "
    f"values) and '{frames.CONTENT_TYPE_JSON}' (the FrameJson payload documented here). "
    "Publishers set Nats-Msg-Id to '<stream_id>:<seq>' so JetStream drops repeats."
)

CHANNELS: Final[tuple[Channel, ...]] = (
    Channel("samples", "samples", "vertac.samples.{stream_id}", messages.FrameJson, _SAMPLES_DOC,
            subjects.SAMPLES.name, (EDGE, "gateway"), ("gateway",),
            payload_doc="frame (binary or JSON)"),
    Channel("digest", "samples digest (at a site)", "vertac.digest.{stream_id}.{partition}",
            messages.FrameJson,
            "At a site, one frame per sample frame stored, with each sensor's lowest and highest "
            "sample in the order they came (two points instead of all): what central takes of a "
            "site whose samples are configured as 'digest', at a fraction of the bytes. Same "
            "encoding, sequence number and Nats-Msg-Id as the frame it digests.",
            subjects.DIGEST.name, ("ingest",), payload_doc="frame (binary)"),
    Channel("register", "register", "vertac.register.{stream_id}", messages.RegistryRequest,
            "Request-reply, answered by the ingest service (queue group ingest): register a "
            "stream, reserve or release frame numbers, or read the server's clock. The only way "
            "an edge changes the registry: the reply is RegistryReply, with header "
            "Vertac-Status.",
            None, (EDGE, "cycles", "gateway"), responder="ingest",
            payload_doc="`RegistryRequest` (`register`, `reserve`, `release`, `clock`) → "
                        "`RegistryReply` (header `Vertac-Status`)",
            also="simulator, replay"),
    Channel("registry", "registry", "vertac.registry.{stream_id}", messages.StreamRegistered,
            "A stream was registered or its sensors changed.",
            subjects.CONTROL.name, ("ingest", "gateway")),
    Channel("control", "control", "vertac.control.{stream_id}", messages.CycleCommand,
            "Commands for a stream: cycle_start, cycle_stop, cycle_abort.",
            subjects.CONTROL.name, ("gateway",), also="CLI, any client"),
    Channel("cycles", "cycles", "vertac.cycles.{stream_id}.{event}", messages.CycleStateChanged,
            f"Cycle lifecycle events; event is one of {', '.join(subjects.CYCLE_EVENTS)}.",
            subjects.CYCLES.name, ("cycles",), ("gateway",)),
    Channel("analysis", "analysis", "vertac.analysis.{stream_id}", messages.AnalysisCompleted,
            "Result of comparing a finished cycle with its reference.",
            subjects.ANALYSIS.name, ("analysis",), ("gateway",)),
    Channel("alerts", "alerts", "vertac.alerts.{stream_id}.{severity}", messages.AlertChanged,
            f"Alert events; severity is one of {', '.join(subjects.SEVERITIES)}.",
            subjects.ALERTS.name, ("alerts",), ("gateway",)),
    Channel("references", "references", "vertac.references.{stream_id}.{op}",
            messages.CreateReference,
            "Request-reply, answered by the analysis service: op is create (CreateReference), "
            "activate (ActivateReference), dry_run (DryRunReference), list or get "
            "(ListReferences). The reply is ReferenceInfo, a list of them, DryRunResult or "
            "ErrorBody, with header Vertac-Status.",
            None, ("gateway",), responder="analysis",
            payload_doc="`CreateReference`, `ActivateReference`, `DryRunReference`, "
                        "`ListReferences` → `ReferenceInfo`, `DryRunResult` or `ErrorBody` "
                        "(header `Vertac-Status`)",
            also="any client"),
    Channel("datasets", "datasets", "vertac.datasets.{stream_id}.{op}", messages.DatasetRequest,
            "Request-reply, answered by the cycles service (queue group cycles), which owns "
            "cycles and datasets: op add files one of the stream's cycles into a dataset, remove "
            "takes it out, import stores the cycles of an uploaded file (an object in "
            f"{subjects.OBJ_UPLOADS}) on the stream and files them. The reply is DatasetEntry, "
            "{removed}, DatasetImported or ErrorBody, with header Vertac-Status.",
            None, ("gateway",), responder="cycles",
            payload_doc="`DatasetRequest` → `DatasetEntry`, `{removed}`, `DatasetImported` or "
                        "`ErrorBody` (header `Vertac-Status`)",
            also="any client"),
    Channel("alertctl", "alertctl", "vertac.alertctl.{stream_id}.{op}",
            messages.AlertControlRequest,
            "Request-reply, answered by the alerts service (queue group alerts), which owns "
            "alerts and alert rules: op ack acknowledges one of the stream's alerts "
            "(AlertControlRequest), rule_put creates or replaces a rule (AlertRule), "
            f"rule_delete removes one (RemoveAlertRule); the rules are kept in "
            f"{subjects.KV_ALERT_RULES}. The reply is {{alert_id, state}}, the AlertRule, "
            "{removed} or ErrorBody, with header Vertac-Status.",
            None, ("gateway",), responder="alerts",
            payload_doc="`AlertControlRequest`, `AlertRule`, `RemoveAlertRule` → "
                        "`{alert_id, state}`, `AlertRule`, `{removed}` or `ErrorBody` (header "
                        "`Vertac-Status`)",
            also="CLI, any client"),
    Channel("cyclectl", "cyclectl", "vertac.cyclectl.{stream_id}.{op}", messages.CycleConfig,
            "Request-reply, answered by the cycles service (queue group cycles), which owns how "
            "a stream's cycles start and end: op config sets the stream's CycleConfig (kept in "
            f"{subjects.KV_CYCLE_CONFIG}; applied from the next frame). The reply is the "
            "CycleConfig or ErrorBody, with header Vertac-Status.",
            None, ("gateway",), responder="cycles",
            payload_doc="`CycleConfig` → `CycleConfig` or `ErrorBody` (header `Vertac-Status`)",
            also="replay, any client"),
    Channel("edge", "edge-status", "vertac.edge.{stream_id}.status", messages.EdgeStatus,
            "What an edge agent says of itself every 5 s: its store-and-forward buffer and "
            "publish rate.",
            None, (EDGE,)),
    Channel("site", "site data (at central)", "vertac.{site}.{channel}.{stream_id}.{rest}",
            messages.FrameJson,
            "At a central VerTac: what a site published on its own bus (samples, registry, "
            "cycles, analysis, alerts), sourced over the site's leaf node with the site id put "
            "in front (vertac.samples.press-1.3 at site north is vertac.north.samples.press-1.3). "
            "Payloads and headers are the site's, unchanged.",
            "VERTAC_SITE_<site>", payload_doc="the site's message, unchanged",
            also="the site's publishers (JetStream sourcing)"),
    Channel("site-control", "site commands (at central)", "vertac.{site}.control.{stream_id}",
            messages.CycleCommand,
            "At a central VerTac: a command for a stream of a site. The site's VERTAC_CONTROL "
            "sources it (kept an hour) as its own vertac.control.<stream_id>, where its cycles "
            "service takes commands.",
            "VERTAC_SITE_<site>_COMMANDS", ("gateway",),
            also="CLI at central (vertac cycle ... --site)"),
    Channel("site-alertctl", "site alert acknowledgements (at central)",
            "vertac.{site}.alertctl.{stream_id}.ack", messages.AlertControlRequest,
            "At a central VerTac: an acknowledgement of an alert of a site's stream (POST "
            "/api/live/alerts/<site>.<alert id>/ack). The site's VERTAC_CONTROL sources it as "
            "its own vertac.alertack.<stream_id>, where its alerts service carries it out.",
            "VERTAC_SITE_<site>_COMMANDS", ("gateway",)),
    Channel("alertack", "alert acknowledgements from central (at a site)",
            "vertac.alertack.{stream_id}", messages.AlertControlRequest,
            "At a site: an acknowledgement central sent, sourced from central's commands for "
            "the site; the alerts service acknowledges the alert as if asked on "
            "vertac.alertctl.<stream_id>.ack, and the acknowledged event goes back to central.",
            subjects.CONTROL.name, also="central (JetStream sourcing)"),
    Channel("site-refctl", "site references (at central)",
            "vertac.{site}.refctl.{stream_id}.create", messages.CreateReference,
            "At a central VerTac: a new reference for a site's stream, made at the site from "
            "its cycles (POST /api/live/stream/<site>.<stream id>/references). The site's "
            "VERTAC_CONTROL sources it as its own vertac.refpush.<stream_id>.",
            "VERTAC_SITE_<site>_COMMANDS", ("gateway",)),
    Channel("refpush", "references from central (at a site)",
            "vertac.refpush.{stream_id}", messages.CreateReference,
            "At a site: a reference central asked for, sourced from central's commands for the "
            "site; the analysis service makes it as if asked on "
            "vertac.references.<stream_id>.create, and the site's next analyses use it.",
            subjects.CONTROL.name, also="central (JetStream sourcing)"),
    Channel("dlq", "dead-letter", "vertac.dlq.{service}", messages.DeadLetter,
            "Messages a service could not process, with the reason and the original payload.",
            subjects.DEAD_LETTER.name, ("ingest", "cycles", "analysis", "alerts"),
            payload_doc="`DeadLetter` (reason, field, original payload base64)"),
)  # fmt: skip


def channel(kind: str) -> Channel:
    for row in CHANNELS:
        if row.kind == kind:
            return row
    raise KeyError(f"the catalogue has no channel {kind!r}")


def publishes(user: str) -> list[str]:
    """The subjects bus user ``user`` (a service or ``edge-<stream_id>``) may publish on."""
    role = EDGE if user.startswith(f"{EDGE}-") else user
    return [c.subject_for(user) for c in CHANNELS if role in c.publishers]


def subscribes(service: str) -> list[str]:
    """The core subscriptions of ``service``: what it listens to and the requests it answers."""
    return [
        subjects.all_of(c.kind)
        for c in CHANNELS
        if service in c.listeners or c.responder == service
    ]


def responds(service: str) -> bool:
    return any(c.responder == service for c in CHANNELS)


def markdown_table(durables: list[tuple[str, str]]) -> str:
    """The docs' subject table; ``durables`` are (kind, service) of the durable consumers."""
    out = [
        "| subject | JetStream stream | payload | who publishes → who receives |",
        "| --- | --- | --- | --- |",
    ]
    for c in CHANNELS:
        senders = [*(p for p in c.publishers), *([c.also] if c.also else [])]
        receivers: list[str] = []
        for who in [*(s for k, s in durables if k == c.kind), *c.listeners]:
            if who not in receivers:
                receivers.append(who)
        if c.responder:
            receivers.append(f"{c.responder} (answers)")
        subject = c.address.replace("{", "<").replace("}", ">")
        stored = f"`{c.stored_in}`" if c.stored_in else "— (core NATS)"
        payload = c.payload_doc or f"`{c.payload.__name__}`"
        who = f"{', '.join(senders)} → {', '.join(receivers) or '—'}"
        out.append(f"| `{subject}` | {stored} | {payload} | {who} |")
    return "\n".join(out) + "\n"
