"""Subscriptions are declared once: the services build their consumers from the table, and the
AsyncAPI document lists who receives what from the same table."""

from __future__ import annotations

import re

import pytest

from schemas import messages, subjects
from schemas.asyncapi import document
from services.common.subscriptions import SUBSCRIPTIONS, subscription
from tests.conftest import REPO


async def nothing(batch) -> None:  # type: ignore[no-untyped-def]
    return None


def test_every_service_reads_what_the_table_says() -> None:
    by_service = {(r.service, r.name) for r in SUBSCRIPTIONS}
    assert by_service == {
        ("ingest", "frames"), ("ingest", "influx"), ("ingest", "registry"),
        ("cycles", "frames"), ("cycles", "commands"), ("analysis", "cycles"),
        ("alerts", "frames"), ("alerts", "analysis"), ("alerts", "cycles"), ("alerts", "notify"),
        ("alerts", "acks"), ("analysis", "refpush"),
    }  # fmt: skip


@pytest.mark.parametrize("row", SUBSCRIPTIONS, ids=lambda r: f"{r.service}.{r.name}")
def test_a_consumer_is_built_from_its_row(row) -> None:
    partition = 3 if row.partitioned else None
    consumer = row.consumer(None, "base", nothing, None, partition=partition)  # type: ignore[arg-type]
    assert consumer.stream == row.stream
    assert consumer.batch == row.batch
    assert consumer.service == row.service
    if row.partitioned:
        assert consumer.subject == subjects.partition_subject(row.kind, 3)
        assert consumer.durable.endswith("-p03")
    else:
        assert consumer.subject == subjects.all_of(row.kind)
        assert consumer.durable.startswith("base")


def test_a_partitioned_row_needs_its_partition() -> None:
    with pytest.raises(ValueError, match="partitioned"):
        subscription("cycles", "frames").subject()
    with pytest.raises(KeyError):
        subscription("cycles", "nothing")


def test_the_asyncapi_document_lists_every_subscription_with_its_payload() -> None:
    doc = document()
    for row in SUBSCRIPTIONS:
        key = f"{row.service}.{row.name}"
        assert doc["operations"][key]["action"] == "receive"
        channel = doc["channels"][key]
        assert channel["address"] == subjects.all_of(row.kind)
        assert row.durable in channel["description"]
        (ref,) = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
        assert message["payload"] == {"$ref": f"#/components/schemas/{row.payload.__name__}"}


def test_no_service_declares_a_consumer_of_its_own() -> None:
    """Consumers come from the tables only (services/common/subscriptions.py, and at central
    services/common/sites.py)."""
    offenders = []
    for path in (REPO / "services").rglob("*.py"):
        if path.name in ("consumer.py", "subscriptions.py", "sites.py"):
            continue
        if re.search(r"\bDurableConsumer\(", path.read_text()):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_frames_stand_for_both_encodings() -> None:
    assert subscription("ingest", "frames").payload is messages.FrameJson


def test_code_uses_only_subjects_the_catalogue_names() -> None:
    """Every subject a service or the edge publishes, subscribes or sends a request on is built
    by schemas.subjects (no subject spelt out in code), and every kind of subject built there is
    a channel of the AsyncAPI document."""
    import ast

    calls = {"publish", "subscribe", "request", "pull_subscribe"}
    offenders = []
    for path in sorted([*(REPO / "services").rglob("*.py"), *(REPO / "edge").rglob("*.py")]):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in calls or not node.args:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant | ast.JoinedStr):
                source = ast.get_source_segment(text, arg) or ""
                if "$JS.API" in source:  # JetStream's own API (direct gets), not a VerTac subject
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {source}")
    assert not offenders, offenders
    channels = {
        c["address"].split(".")[1]
        for c in document()["channels"].values()
        if c["address"].startswith(f"{subjects.PREFIX}.")
    }
    built = set(
        re.findall(r'f"\{PREFIX\}\.([a-z]+)\.', (REPO / "schemas" / "subjects.py").read_text())
    )
    assert len(built) >= 10, built
    assert built <= channels, f"subjects without a channel: {sorted(built - channels)}"


def test_only_a_durable_one_process_works_on_settles_batches_with_one_acknowledgement() -> None:
    """AckPolicy.ALL acknowledges everything below a message: on a durable that replicas share
    (ingest), one replica's acknowledgement would settle frames another still holds."""
    from services.common.subscriptions import SUBSCRIPTIONS

    rows = [row for row in SUBSCRIPTIONS if row.ack_all]
    assert rows, "no subscription settles batches with one acknowledgement"
    for row in rows:
        assert row.partitioned, f"{row.service}/{row.name} is shared by replicas"


def test_every_durable_reads_a_channel_of_the_catalogue_where_it_is_stored() -> None:
    from schemas.catalogue import channel

    for row in SUBSCRIPTIONS:
        assert channel(row.kind).stored_in == row.stream, f"{row.service}.{row.name}"


def test_each_channel_is_stored_in_the_stream_that_captures_its_subjects() -> None:
    from schemas.catalogue import CHANNELS
    from services.federation import commands_stream, site_stream

    captured = {s: stream.name for stream in subjects.ALL_STREAMS for s in stream.subjects}
    at_central = {"site": site_stream("x"), "site-control": commands_stream("x"),
                  "site-alertctl": commands_stream("x"),
                  "site-refctl": commands_stream("x")}  # fmt: skip
    for c in CHANNELS:
        if c.kind in at_central:  # a central's stream per site (services/federation.py)
            assert c.address.startswith("vertac.{site}.")
            assert c.stored_in == at_central[c.kind].replace("_x", "_<site>"), c.kind
            continue
        assert captured.get(subjects.all_of(c.kind)) == c.stored_in, c.kind


def test_the_bus_users_permissions_are_the_catalogues_channels() -> None:
    """What a service may publish, subscribe to and answer is what the catalogue says of it;
    an edge user publishes its own stream's subjects of the edge's channels, nothing else."""
    import json

    from schemas.catalogue import CHANNELS, EDGE, SERVICES
    from services.natsauth import ADMIN, server_config

    users = {ADMIN: "a", **{s: "s" for s in SERVICES}, "edge-press-1": "e"}
    config = json.loads(server_config(users).removeprefix("authorization "))
    perms = {u["user"]: u.get("permissions", {}) for u in config["users"]}
    assert perms[ADMIN] == {}
    for service in SERVICES:
        publish = set(perms[service]["publish"]["allow"])
        subscribe = set(perms[service]["subscribe"]["allow"])
        for c in CHANNELS:
            sends = service in c.publishers
            assert (c.subject_for(service) in publish) == sends, (service, c.kind)
            listens = service in c.listeners or c.responder == service
            assert (subjects.all_of(c.kind) in subscribe) == listens, (service, c.kind)
        answers = any(c.responder == service for c in CHANNELS)
        assert perms[service].get("allow_responses", False) == answers, service
    edge = perms["edge-press-1"]
    vertac_subjects = {s for s in edge["publish"]["allow"] if s.startswith("vertac.")}
    assert vertac_subjects == {
        c.address.replace("{stream_id}", "press-1") for c in CHANNELS if EDGE in c.publishers
    }
    assert vertac_subjects == {
        subjects.samples("press-1"), subjects.register_request("press-1"),
        subjects.edge_status("press-1"),
    }  # fmt: skip


def test_no_service_may_read_another_services_private_state() -> None:
    """Cycle state and alert-rule state are their service's own: no other bus user may read or
    write their buckets (what others need of them comes as events)."""
    from services.natsauth import SERVICES, _service_permissions

    private = {subjects.KV_CYCLE_STATE: "cycles", subjects.KV_ALERT_STATE: "alerts"}
    for service in SERVICES:
        allowed = " ".join(_service_permissions(service)["publish"]["allow"])  # type: ignore[index]
        for bucket, owner in private.items():
            assert (f"KV_{bucket}" in allowed) == (service == owner), (service, bucket)


def test_a_service_reads_only_its_own_buckets_and_those_published_to_all() -> None:
    """What another service owns is read only where its owner publishes it (the registry,
    cycle configurations, recordings, alert rules), as PostgreSQL's ``api`` views are."""
    from services.natsauth import GRANTS, PUBLISHED_BUCKETS

    for service, grant in GRANTS.items():
        for bucket in (*grant.kv_reads, *grant.objects_read):
            owner = PUBLISHED_BUCKETS.get(bucket)
            writers = [s for s, g in GRANTS.items() if bucket in (*g.kv_writes, *g.objects_written)]
            assert owner is not None or writers == [service], (service, bucket)
            if owner is not None:
                assert writers == [owner], (bucket, writers)


def test_every_bucket_and_object_store_has_one_writing_service() -> None:
    """A bucket has one owner that writes it; the others read it at most. Two are shared by
    design: leases (each partitioned service writes only its own keys) and frame numbers (a
    counter every publisher of a stream takes numbers from by compare-and-set: ingest's
    registry for edges, the gateway for REST batches)."""
    from services.natsauth import GRANTS, SERVICES, _service_permissions

    writers: dict[str, list[str]] = {}
    for service, grant in GRANTS.items():
        for bucket in (*grant.kv_writes, *grant.objects_written):
            writers.setdefault(bucket, []).append(service)
    shared = {subjects.KV_LEASES, subjects.KV_SEQ}
    for bucket, services in writers.items():
        assert len(services) == 1 or bucket in shared, (bucket, services)
    # what operators set is written by the service it configures; the gateway asks it
    owners = {subjects.KV_CYCLE_CONFIG: "cycles", subjects.KV_ALERT_RULES: "alerts",
              subjects.KV_STREAMS: "ingest", subjects.OBJ_CYCLES: "cycles"}  # fmt: skip
    for bucket, owner in owners.items():
        assert writers[bucket] == [owner], (bucket, writers[bucket])
        for service in SERVICES:
            allowed = _service_permissions(service)["publish"]["allow"]  # type: ignore[index]
            writes = f"$KV.{bucket}.>" in allowed or f"$O.{bucket}.>" in allowed
            assert writes == (service == owner), (service, bucket)
    for service in SERVICES:
        allowed = _service_permissions(service)["publish"]["allow"]  # type: ignore[index]
        leases = [s for s in allowed if s.startswith(f"$KV.{subjects.KV_LEASES}.")]
        expected = [f"$KV.{subjects.KV_LEASES}.{service}.>"]
        assert leases == (expected if subjects.KV_LEASES in GRANTS[service].kv_writes else [])


def test_at_central_the_owners_of_each_kind_read_the_sites_streams() -> None:
    """``vertac central --site north``: every service makes consumers on
    ``VERTAC_SITE_north`` (each owner takes its kinds from it; the gateway what viewers watch
    live), none on a site central was not given."""
    import json

    from schemas.catalogue import SERVICES
    from services.natsauth import ADMIN, server_config

    users = {ADMIN: "a", **{s: "s" for s in SERVICES}}
    config = json.loads(server_config(users, ("north",)).removeprefix("authorization "))
    perms = {u["user"]: u.get("permissions", {}) for u in config["users"]}
    for service in SERVICES:
        publish = set(perms[service]["publish"]["allow"])
        assert "$JS.API.CONSUMER.CREATE.VERTAC_SITE_north.>" in publish, service
        assert not any("VERTAC_SITE_south" in s for s in publish)
    assert "vertac.*.control.*" in perms["gateway"]["publish"]["allow"]  # commands to sites
