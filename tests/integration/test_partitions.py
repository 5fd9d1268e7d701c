"""Partition leases on a real nats-server: a lease that expired under a busy replica is reported
lost and given back without an error (the replica goes on with the rest)."""

from __future__ import annotations

import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from schemas import subjects
from services.common.partitions import PartitionLeases
from tests.conftest import eventually

pytestmark = pytest.mark.integration


async def test_an_expired_lease_is_lost_and_released_without_an_error(bus) -> None:
    kv = await bus.js.key_value(subjects.KV_LEASES)
    leases = PartitionLeases(kv, "leasetest", partitions=2)
    gained, surplus = await leases.step()
    assert sorted(gained) == [0, 1] and surplus == []
    held = dict(leases.owned)

    async def expired() -> bool:
        try:
            await kv.get("leasetest.p0")
        except (KeyNotFoundError, NotFoundError):
            return True
        return False

    # no renewal for longer than the TTL, as when a replica's event loop is starved
    await eventually(expired, timeout=subjects.LEASE_TTL_S * 5, interval=0.5)
    await leases.release(0)  # JetStream refuses the delete (400, code 10071): not an error
    leases.owned = held
    gained, surplus = await leases.step()
    assert 0 in surplus and 1 in surplus  # both expired; both are claimed again at once
    assert sorted(gained) == [0, 1]
    await leases.leave()
