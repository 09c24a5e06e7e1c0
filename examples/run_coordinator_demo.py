"""Watch backpressure happen: a fast producer, a deliberately slow sink.

    make run            # or: .venv/bin/python examples/run_coordinator_demo.py

A producer offers 5,000 items/s to a coordinator (capacity 1,000) whose sink
drains about 2,000 items/s (50 ms per batch of 50, two workers). Each feedback
event is printed as the level changes (ok -> soft -> hard -> ok), and the
producer acts on it the way a pipeline should: it pauses on ``hard`` and
resumes on ``ok``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from market_data_store.coordinator import (
    BackpressureLevel,
    FeedbackBus,
    FeedbackEvent,
    WriteCoordinator,
)


@dataclass
class Item:
    value: int


class SlowSink:
    """Pretends to be a slow database: 50 ms per batch."""

    def __init__(self) -> None:
        self.written = 0

    async def write(self, batch: Sequence[Item]) -> None:
        await asyncio.sleep(0.05)
        self.written += len(batch)


async def main() -> None:
    started = time.monotonic()
    bus = FeedbackBus()
    may_send = asyncio.Event()
    may_send.set()

    async def on_feedback(event: FeedbackEvent) -> None:
        print(
            f"[{time.monotonic() - started:5.2f}s] feedback level={event.level.value:<4} "
            f"queue={event.queue_size:>4}/{event.capacity} ({event.utilization:4.0%}) "
            f"reason={event.reason or '-'}"
        )
        # What a pipeline does with it: pause on hard, resume once recovered.
        if event.level is BackpressureLevel.hard:
            may_send.clear()
        elif event.level is BackpressureLevel.ok:
            may_send.set()

    bus.subscribe(on_feedback)
    sink = SlowSink()
    async with WriteCoordinator[Item](
        sink=sink,
        capacity=1_000,
        workers=2,
        batch_size=50,
        flush_interval=0.1,
        bus=bus,
        coord_id="demo",
    ) as coord:
        # 100 items every 20 ms = 5,000 items/s offered; the sink drains ~2,000/s.
        for burst in range(30):
            await may_send.wait()
            await coord.submit_many([Item(burst * 100 + i) for i in range(100)])
            await asyncio.sleep(0.02)
        await coord.wait_idle()
        health = coord.health()
    print(
        f"[{time.monotonic() - started:5.2f}s] done: {sink.written} items written, "
        f"queue={health.queue_size}/{health.capacity}, workers alive={health.workers_alive}"
    )


if __name__ == "__main__":
    asyncio.run(main())
