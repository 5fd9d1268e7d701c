"""The raw JetStream baseline of the plant benchmark: a durable pull consumer that only fetches
and acknowledges, the least any consumer of a frame can cost. Run as a process
(``python -m tests.bench.rawjs <nats url> <stream> <subject>``); it prints ``ready``, then one
line with the frames it acknowledged once its standard input closes."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig


async def consume(url: str, stream: str, subject: str) -> None:
    nc = await nats.connect(url, name="vertac-bench-rawjs")
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable="rawjs", stream=stream,
                                  config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))  # fmt: skip
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.readline() else None)
    print("ready", flush=True)
    acked = 0
    while not done.is_set():
        try:
            msgs = await sub.fetch(256, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        await asyncio.gather(*(m.ack() for m in msgs))
        acked += len(msgs)
    with contextlib.suppress(nats.errors.Error):
        await nc.drain()
    print(acked, flush=True)


if __name__ == "__main__":
    asyncio.run(consume(*sys.argv[1:4]))
