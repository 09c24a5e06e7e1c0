"""Feedback from a running WriteCoordinator through the process bus (library users' view)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from market_data_core.telemetry import BackpressureLevel

from market_data_store.coordinator import FeedbackBus, FeedbackEvent, Sink, WriteCoordinator
from tests.support.feedback import Recorder


@dataclass
class Item:
    v: int


class GatedSink(Sink[Item]):
    """Holds every write until ``gate`` opens, so the queue fills deterministically."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.gate = asyncio.Event()

    async def write(self, batch: Sequence[Item]) -> None:
        await self.gate.wait()
        self.items.extend(batch)


async def test_coordinator_emits_hard_on_high_watermark(
    fresh_bus: FeedbackBus, recorder: Recorder
) -> None:
    fresh_bus.subscribe(recorder)
    sink = GatedSink()
    async with WriteCoordinator[Item](
        sink=sink, capacity=100, high_watermark=80, low_watermark=50, workers=1,
        batch_size=50, flush_interval=0.1, coord_id="test-coord",
    ) as coord:  # fmt: skip
        for i in range(85):
            await coord.submit(Item(i))
        hard = [e for e in recorder.events if e.level == BackpressureLevel.hard]
        assert len(hard) == 1
        assert hard[0].coordinator_id == "test-coord"
        assert hard[0].queue_size == 80
        sink.gate.set()


async def test_coordinator_emits_soft_in_midrange(
    fresh_bus: FeedbackBus, recorder: Recorder
) -> None:
    fresh_bus.subscribe(recorder)
    sink = GatedSink()
    async with WriteCoordinator[Item](
        sink=sink, capacity=100, high_watermark=80, low_watermark=40, workers=1,
        coord_id="test-soft",
    ) as coord:  # fmt: skip
        for i in range(60):
            await coord.submit(Item(i))
        assert recorder.transitions() == [("soft", 41, None)]
        assert recorder.events[0].coordinator_id == "test-soft"
        sink.gate.set()


async def test_coordinator_emits_ok_on_recovery_and_runs_callbacks(
    fresh_bus: FeedbackBus, recorder: Recorder
) -> None:
    fresh_bus.subscribe(recorder)
    highs: list[bool] = []
    lows: list[bool] = []

    async def on_high() -> None:
        highs.append(True)

    async def on_low() -> None:
        lows.append(True)

    sink = GatedSink()
    async with WriteCoordinator[Item](
        sink=sink, capacity=100, high_watermark=80, low_watermark=30, workers=2,
        batch_size=25, flush_interval=0.01, on_backpressure_high=on_high,
        on_backpressure_low=on_low, coord_id="test-recovery",
    ) as coord:  # fmt: skip
        await coord.submit_many([Item(i) for i in range(85)])
        assert highs == [True]
        sink.gate.set()
        await asyncio.wait_for(coord.wait_idle(), 5)
    assert recorder.levels() == ["soft", "hard", "ok"]
    assert recorder.events[-1].reason == "queue_recovered"
    assert lows == [True]
    assert len(sink.items) == 85


async def test_multiple_coordinators_distinct_ids(
    fresh_bus: FeedbackBus, recorder: Recorder
) -> None:
    fresh_bus.subscribe(recorder)
    sink1, sink2 = GatedSink(), GatedSink()
    async with (
        WriteCoordinator[Item](sink=sink1, capacity=50, high_watermark=40, coord_id="A") as c1,
        WriteCoordinator[Item](sink=sink2, capacity=50, high_watermark=40, coord_id="B") as c2,
    ):
        for i in range(45):
            await c1.submit(Item(i))
            await c2.submit(Item(i))
        ids = [e.coordinator_id for e in recorder.events]
        assert ids.count("A") == ids.count("B") == 2  # soft then hard, each
        sink1.gate.set()
        sink2.gate.set()


async def test_feedback_event_utilization(fresh_bus: FeedbackBus, recorder: Recorder) -> None:
    fresh_bus.subscribe(recorder)
    sink = GatedSink()
    async with WriteCoordinator[Item](
        sink=sink, capacity=100, high_watermark=60, workers=1, coord_id="test-util"
    ) as coord:
        await coord.submit_many([Item(i) for i in range(65)])
        sink.gate.set()
    assert recorder.events
    for e in recorder.events:
        assert isinstance(e, FeedbackEvent)
        assert e.capacity == 100
        assert e.utilization == e.queue_size / 100
