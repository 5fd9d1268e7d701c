"""Reading JetStream without leaving anything behind on the server: batched direct gets.

A consumer, even a short-lived one, is server state: made per request, it lingers until its
inactivity threshold and counts against the stream's consumer limit, and a user who may make
consumers but not delete them (every service but the admin) can fill that limit with cheap
reads. A direct get (``$JS.API.DIRECT.GET.<stream>``, nats-server 2.11+) answers from the
stream itself and leaves nothing: :func:`messages` pages through one subject's messages by
sequence or time, :func:`latest` reads the last value of every key of a bucket
(``multi_last``), :func:`read_object` an object of an object store.

The stream must allow direct access (``allow_direct``); :func:`services.common.bus.init_bus`
sets it on the streams and buckets read this way (``DIRECT_READ_STREAMS`` and
``DIRECT_READ_BUCKETS`` of :mod:`schemas.subjects`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

# per request: a page of messages; the server caps multi_last at 1,024 subjects
PAGE = 512
MULTI_LAST_MAX = 1024


class DirectGetError(RuntimeError):
    """The server refused a direct get."""

    def __init__(self, stream: str, status: str, description: str) -> None:
        super().__init__(f"direct get on {stream}: {status} {description}".strip())
        self.status = status


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One stored message as a direct get returns it."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]


async def _batch(
    nc: Client, stream: str, request: dict[str, Any], wait_s: float
) -> tuple[list[StoredMsg], int]:
    """One direct-get request: its messages, and how many more match after them."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        out: list[StoredMsg] = []
        while True:
            msg = await asyncio.wait_for(queue.get(), wait_s)
            headers = dict(msg.headers or {})
            status = headers.get("Status")
            if status:
                if status == "404":  # nothing matches
                    return out, 0
                if status == "204":  # end of the batch
                    return out, int(headers.get("Nats-Num-Pending", "0"))
                raise DirectGetError(stream, status, headers.get("Description", ""))
            out.append(
                StoredMsg(
                    headers.get("Nats-Subject", ""),
                    int(headers.get("Nats-Sequence", "0")),
                    msg.data,
                    headers,
                )
            )
    finally:
        await sub.unsubscribe()


async def messages(
    nc: Client,
    stream: str,
    subject: str,
    *,
    from_seq: int = 1,
    since: datetime | None = None,
    to_seq: int | None = None,
    limit: int | None = None,
    wait_s: float = 5.0,
) -> AsyncIterator[StoredMsg]:
    """The messages of ``stream`` on ``subject`` (wildcards allowed), oldest first: from stream
    sequence ``from_seq`` or stored since ``since``, up to ``to_seq`` (included), at most
    ``limit``."""
    room = limit if limit is not None else 1 << 62
    request: dict[str, Any] = {"next_by_subj": subject}
    if since is not None:
        request["start_time"] = since.isoformat().replace("+00:00", "Z")
    else:
        request["seq"] = max(1, from_seq)
    while room > 0:
        request["batch"] = min(PAGE, room)
        if to_seq is not None:
            request["up_to_seq"] = to_seq
        page, pending = await _batch(nc, stream, request, wait_s)
        for msg in page:
            yield msg
        room -= len(page)
        if not page or not pending:
            return
        request.pop("start_time", None)
        request["seq"] = page[-1].seq + 1


async def latest(
    nc: Client, bucket: str, under: str = "", wait_s: float = 5.0
) -> dict[str, StoredMsg]:
    """The current value of every key of KV ``bucket`` (below the key prefix ``under``, e.g.
    ``"press-1."``): key -> message. Deleted and purged keys are left out."""
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    found: dict[str, StoredMsg] = {}
    try:
        page, _ = await _batch(
            nc,
            stream,
            {"multi_last": [f"{prefix}{under}>"], "batch": MULTI_LAST_MAX},
            wait_s,
        )
        for msg in page:
            found[msg.subject.removeprefix(prefix)] = msg
    except DirectGetError as exc:
        if exc.status != "413":
            raise
        # more keys than one multi_last answers: walk the bucket's history, keeping the last
        # value of each key
        async for msg in messages(nc, stream, f"{prefix}{under}>", wait_s=wait_s):
            found[msg.subject.removeprefix(prefix)] = msg
    return {
        key: msg
        for key, msg in found.items()
        if msg.headers.get("KV-Operation", "PUT") not in ("DEL", "PURGE")
    }


async def last_message(
    nc: Client, stream: str, subject: str, wait_s: float = 5.0
) -> StoredMsg | None:
    """The newest message of ``stream`` on ``subject`` (wildcards allowed), or None."""
    page, _ = await _batch(nc, stream, {"multi_last": [subject], "batch": MULTI_LAST_MAX}, wait_s)
    return max(page, key=lambda m: m.seq, default=None)


M = TypeVar("M", bound=BaseModel)
_reported: set[tuple[str, str, int]] = set()


def valid_records(
    bucket: str, entries: dict[str, StoredMsg], model: type[M], key_of: Callable[[M], str]
) -> dict[str, M]:
    """The entries of ``bucket`` that are valid ``model`` records stored under their own key
    (``key_of(record)``); any other is skipped and logged once per revision, naming the key,
    so one bad record never hides the others."""
    out: dict[str, M] = {}
    for key, msg in entries.items():
        try:
            record = model.model_validate_json(msg.data)
        except ValidationError as exc:
            reason = f"not a valid {model.__name__}: {exc.errors()[0].get('msg', '')}"
        else:
            if key_of(record) == key:
                out[key] = record
                continue
            reason = f"names {key_of(record)!r}, not its key"
        if (bucket, key, msg.seq) not in _reported:
            _reported.add((bucket, key, msg.seq))
            if len(_reported) > 10_000:
                _reported.clear()
            log.warning(
                "skipping a malformed record",
                extra={"bucket": bucket, "key": key, "revision": msg.seq, "reason": reason},
            )
    return out


class ObjectMissing(LookupError):
    """No such object in the store (never put, or deleted)."""


async def read_object(nc: Client, store: str, name: str, wait_s: float = 10.0) -> bytes:
    """An object of object store ``store``, read with direct gets (an object store's ``get``
    makes an ordered consumer per read); its SHA-256 digest is checked."""
    stream = f"OBJ_{store}"
    meta_subject = f"$O.{store}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    page, _ = await _batch(nc, stream, {"multi_last": [meta_subject], "batch": 1}, wait_s)
    if not page:
        raise ObjectMissing(f"object {name!r} is not in {store}")
    info = json.loads(page[0].data)
    if info.get("deleted") or not info.get("nuid"):
        raise ObjectMissing(f"object {name!r} was deleted from {store}")
    chunks = [
        msg.data
        async for msg in messages(nc, stream, f"$O.{store}.C.{info['nuid']}", wait_s=wait_s)
    ]
    data = b"".join(chunks)
    digest = str(info.get("digest", ""))
    if digest:
        encoded = digest.split("=", 1)[1] if "=" in digest else digest
        want = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        if hashlib.sha256(data).digest() != want:
            raise ObjectMissing(f"object {name!r} of {store} does not match its digest")
    return data
