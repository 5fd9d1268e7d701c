"""How a stream's cycles start and end, set on request: the cycles service alone writes
``vertac_cycle_config`` (the gateway's ``PUT /api/live/stream/{id}/cycle-config``, replay and
any client with the rights send ``vertac.cyclectl.<stream_id>.config``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas.messages import CycleConfig, StreamRegistered
from services.common.responder import RequestError, per_stream
from services.cycles.adapters import ConfigStore


class CycleControl:
    """Answers ``vertac.cyclectl.<stream_id>.<op>``: ``config`` sets the stream's
    :class:`CycleConfig` once the stream is registered and names its trigger sensor."""

    def __init__(
        self,
        configs: ConfigStore,
        registered: Callable[[str], Awaitable[StreamRegistered | None]],
    ) -> None:
        self.configs = configs
        self.registered = registered
        self.handle = per_stream({"config": (CycleConfig, self.set_config)}, "cycle")

    async def set_config(self, stream_id: str, config: CycleConfig) -> CycleConfig:
        """Keep ``config`` for the stream; the replica that holds it applies it from its next
        frame (within the configuration's read interval, 1 s)."""
        record = await self.registered(stream_id)
        if record is None:
            raise RequestError(404, f"stream {stream_id!r} is not registered", "stream_id")
        if config.signal_sensor and config.signal_sensor not in {s.id for s in record.sensors}:
            raise RequestError(
                422, f"sensor {config.signal_sensor!r} is not registered", "signal_sensor"
            )
        await self.configs.put(stream_id, config)
        return config
