"""Sharing the partitions of per-stream work among the live replicas of one service.

Every replica keeps a member key ``<service>.member.<id>`` alive in the ``vertac_leases`` KV
bucket (whose entries expire after ``LEASE_TTL_S``) and holds leases ``<service>.p<n>`` for at
most its fair share (partitions / live members, rounded up). A lease is created only where none
exists, renewed with compare-and-set, and given back (after its work stopped) when more members
appear; a replica that dies loses its leases when they expire and the others take them over.
Each partition has its own durable consumers, so whoever holds a lease continues exactly where
the last holder acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from edge.client import describe
from schemas import subjects
from services.common import directget
from services.common.consumer import DurableConsumer

log = logging.getLogger(__name__)
PartitionWork = Callable[[int, asyncio.Event], Coroutine[Any, Any, None]]


class PartitionLeases:
    """The lease bookkeeping of one replica (no tasks: :class:`Partitioned` runs the work)."""

    def __init__(
        self,
        kv: KeyValue,
        service: str,
        partitions: int = subjects.PARTITIONS,
        member: str = "",
        nc: Client | None = None,
    ) -> None:
        self.kv = kv
        self.nc = nc  # given: members are listed with a direct get, not a consumer per step
        self.service = service
        self.partitions = partitions
        self.member = member or uuid.uuid4().hex[:12]
        self.owned: dict[int, int] = {}  # partition -> revision of our lease
        # partition -> until when (monotonic) our lease is sure to be alive: the moment the
        # write that made or renewed it was sent, plus the bucket's TTL, less a margin for clocks
        # and the server's own delay. Past it another replica may hold the partition, so work
        # on it stops until a renewal confirms it again (:meth:`holds`).
        self.valid_until: dict[int, float] = {}
        self.ttl_s = subjects.LEASE_TTL_S
        self.margin_s = subjects.LEASE_TTL_S / 3

    def holds(self, p: int) -> bool:
        """True while our lease on ``p`` is certain to be alive: work on ``p`` may go on."""
        return time.monotonic() < self.valid_until.get(p, 0.0)

    def _confirmed(self, p: int, sent: float) -> None:
        self.valid_until[p] = sent + self.ttl_s - self.margin_s

    def _key(self, p: int) -> str:
        return f"{self.service}.p{p}"

    async def members(self) -> list[str]:
        prefix = f"{self.service}.member."
        if self.nc is not None:
            keys = list(await directget.latest(self.nc, subjects.KV_LEASES, prefix))
        else:
            try:
                keys = await self.kv.keys()
            except NoKeysError:
                return [self.member]
        found = sorted(k.removeprefix(prefix) for k in keys if k.startswith(prefix))
        return found if self.member in found else sorted([*found, self.member])

    async def step(self, leaving: Collection[int] = ()) -> tuple[list[int], list[int]]:
        """Announce this member, renew held leases, and work out what to gain and give back.

        Returns ``(gained, surplus)``: partitions now leased to us, and partitions we hold beyond
        our fair share (the caller stops their work, then calls :meth:`release`). Partitions whose
        lease was lost are dropped from ``owned`` and returned in ``surplus`` too. ``leaving`` are
        partitions being given back already: still renewed until released, not counted again.
        """
        # renew first and all at once: a busy replica must not let its leases expire
        held = list(self.owned.items())
        sent = time.monotonic()
        renewed = await asyncio.gather(
            *(self.kv.update(self._key(p), self.member.encode(), rev) for p, rev in held),
            return_exceptions=True,
        )
        surplus: list[int] = []
        for (p, _), result in zip(held, renewed, strict=True):
            if isinstance(result, int):
                self.owned[p] = result
                self._confirmed(p, sent)
            elif _wrong_last(result):
                log.warning("lease lost", extra={"partition": p, "service": self.service})
                del self.owned[p]
                self.valid_until.pop(p, None)
                surplus.append(p)
            else:
                raise result  # the bus is out of reach: the caller retries the whole step
        await self.kv.put(f"{self.service}.member.{self.member}", b"1")
        members = await self.members()
        fair = math.ceil(self.partitions / len(members))
        staying = sorted(p for p in self.owned if p not in leaving)
        extra = len(staying) - fair
        if extra > 0:
            surplus.extend(staying[-extra:])
        gained: list[int] = []
        if len(staying) < fair and not leaving:
            start = members.index(self.member) * fair  # spread first claims over the members
            for k in range(self.partitions):
                p = (start + k) % self.partitions
                if p in self.owned:
                    continue
                sent = time.monotonic()
                try:
                    self.owned[p] = await self.kv.create(self._key(p), self.member.encode())
                except KeyWrongLastSequenceError:
                    continue
                self._confirmed(p, sent)
                gained.append(p)
                if len(self.owned) >= fair:
                    break
        return gained, surplus

    async def release(self, p: int) -> None:
        """Give lease ``p`` back at once (its work has stopped)."""
        revision = self.owned.pop(p, None)
        self.valid_until.pop(p, None)
        if revision is None:
            return
        try:
            await self.kv.delete(self._key(p), last=revision)
        except (KeyNotFoundError, NotFoundError):
            pass
        except nats.js.errors.Error as exc:
            if not _wrong_last(exc):  # expired or taken over meanwhile: not ours to delete
                raise

    async def leave(self) -> None:
        for p in list(self.owned):
            await self.release(p)
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            await self.kv.delete(f"{self.service}.member.{self.member}")


def _wrong_last(exc: BaseException) -> bool:
    """A compare-and-set refused: the key was revised, expired or deleted since we wrote it
    (JetStream answers a KV delete with a plain 400, error code 10071)."""
    if isinstance(exc, KeyWrongLastSequenceError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == 10071


class Partitioned:
    """Runs ``work(partition, stop)`` for every partition this replica holds a lease on."""

    def __init__(
        self, leases: PartitionLeases, work: PartitionWork, every_s: float | None = None
    ) -> None:
        self.leases = leases
        self.work = work
        self.every_s = every_s if every_s is not None else subjects.LEASE_TTL_S / 4
        self.tasks: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self.leaving: dict[int, asyncio.Task[None]] = {}  # partitions being stopped and released

    def owns(self, p: int) -> bool:
        """True while the work on ``p`` runs here and its lease is certain to be alive."""
        return p in self.tasks and self.leases.holds(p)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    gained, surplus = await self.leases.step(self.leaving)
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning("lease renewal failed", extra={"error": describe(exc)})
                    gained, surplus = [], []
                for p in surplus:  # stopped apart: renewals of the rest go on meanwhile
                    if p not in self.leaving:
                        self.leaving[p] = asyncio.create_task(self._hand_back(p))
                for p in gained:
                    self._start(p)
                self._restart_failed()
                if gained or surplus:
                    log.info(
                        "partitions held",
                        extra={"service": self.leases.service, "member": self.leases.member,
                               "partitions": sorted(self.tasks)},
                    )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.every_s)
        finally:
            await asyncio.gather(*self.leaving.values(), return_exceptions=True)
            await asyncio.gather(*(self._stop(p) for p in list(self.tasks)))
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await self.leases.leave()

    async def _hand_back(self, p: int) -> None:
        """Stop the work on ``p``, then give its lease back (renewed until then)."""
        try:
            await self._stop(p)
            try:
                await self.leases.release(p)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                # it expires on its own; the work has stopped either way
                log.warning("lease release failed", extra={"partition": p, "error": describe(exc)})
        finally:
            self.leaving.pop(p, None)

    def _start(self, p: int) -> None:
        done = asyncio.Event()
        self.tasks[p] = (asyncio.create_task(self.work(p, done)), done)

    def _restart_failed(self) -> None:
        for p, (task, _) in list(self.tasks.items()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error(
                    "partition work failed; starting it again",
                    extra={"partition": p, "error": describe(task.exception())},  # type: ignore[arg-type]
                )
                self._start(p)

    async def _stop(self, p: int) -> None:
        entry = self.tasks.pop(p, None)
        if entry is None:
            return
        task, done = entry
        done.set()
        try:
            await asyncio.wait_for(task, timeout=30)  # cancels the task when it times out
        except TimeoutError:
            log.warning("partition work did not stop in 30 s: cancelled", extra={"partition": p})
        except Exception as exc:  # the work already failed; it is stopped either way
            log.warning("partition work ended with an error", extra={"error": describe(exc)})


async def after_previous_holder(consumers: list[DurableConsumer[Any]], stop: asyncio.Event) -> None:
    """On taking over a partition: wait until what a previous holder had in flight (it died, or
    stopped mid-batch) is due again, so it is handled before anything newer. JetStream
    redelivers an expired message ahead of new ones; handled out of order, a state machine
    would skip it or apply it on top of later data."""
    wait_s = 0.0
    for consumer in consumers:
        info = await consumer.info()
        if info.num_ack_pending:
            # the durable's own ack wait: one made by an older version may differ from ours
            wait_s = max(wait_s, (info.config.ack_wait or consumer.ack_wait) + 1)
    if wait_s:
        log.info(
            "waiting for the previous holder's messages",
            extra={"s": wait_s, "durables": [c.durable for c in consumers]},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
