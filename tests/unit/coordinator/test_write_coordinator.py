"""WriteCoordinator: lifecycle, drain, forced stop, submit_many, health, generics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    QueueClosedError,
    QueueFullError,
    RetryPolicy,
    WriteCoordinator,
)
from tests.support.feedback import Recorder
from tests.support.waits import until

from .sinks import OutageSink, PoisonSink, RecordingSink


async def test_everything_submitted_is_written_on_drain(bus: FeedbackBus) -> None:
    sink = RecordingSink()
    async with WriteCoordinator[int](
        sink=sink, capacity=100, workers=3, batch_size=7, flush_interval=0.01, bus=bus
    ) as coord:
        for i in range(250):
            await coord.submit(i)
        await coord.submit_many(list(range(250, 500)))
    assert sorted(sink.items) == list(range(500))
    assert coord.stats.submitted == 500
    assert coord.stats.items_written == 500
    assert coord.health().workers_alive == 0


async def test_stop_waits_on_completion_not_polling(bus: FeedbackBus) -> None:
    sink = RecordingSink(delay=0.02)
    coord = WriteCoordinator[int](sink=sink, capacity=100, workers=1, batch_size=10, bus=bus)
    await coord.start()
    await coord.submit_many(list(range(30)))
    await coord.stop(drain=True, timeout=5)
    assert sorted(sink.items) == list(range(30))


async def test_forced_stop_dead_letters_unwritten_items(bus: FeedbackBus, tmp_path: Path) -> None:
    sink = OutageSink()
    sink.down.set()
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    coord = WriteCoordinator[int](
        sink=sink,
        capacity=100,
        workers=2,
        batch_size=10,
        flush_interval=0.01,
        retry_policy=RetryPolicy(initial_backoff_ms=1, max_backoff_ms=5),
        circuit_breaker=CircuitBreaker(failure_threshold=2, half_open_after_sec=0.01),
        dead_letter_queue=dlq,
        bus=bus,
    )
    await coord.start()
    await coord.submit_many(list(range(45)))
    await until(lambda: sink.failed_attempts > 0, what="the writes failing")
    await coord.stop(drain=True, timeout=0.1)  # the sink never recovers

    records = await dlq.replay()
    assert len(records) == 1
    assert "stopped before these items were written" in records[0].error
    assert sorted(records[0].items) == list(range(45))
    assert coord.stats.dropped["shutdown"] == 45
    assert coord.stats.dead_lettered == 45
    assert coord.health().workers_alive == 0


async def test_stop_without_drain_rescues_queue(bus: FeedbackBus, tmp_path: Path) -> None:
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    coord = WriteCoordinator[int](
        sink=RecordingSink(), capacity=100, workers=1, dead_letter_queue=dlq, bus=bus
    )
    await coord.submit_many([1, 2, 3])  # accepted before start: queued
    await coord.start()
    await coord.stop(drain=False)
    written_or_saved = coord.stats.items_written + coord.stats.dead_lettered
    assert written_or_saved == 3


async def test_forced_stop_without_dlq_logs_the_loss(
    bus: FeedbackBus, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink(delay=10)
    coord = WriteCoordinator[int](sink=sink, capacity=10, workers=1, flush_interval=0, bus=bus)
    await coord.start()
    await coord.submit_many([1, 2])
    await until(lambda: coord.queue.size == 0, what="the batch taken by the worker")
    await coord.stop(timeout=0.02)
    assert "2 items could not be dead-lettered (no dead-letter queue is configured)" in caplog.text
    assert "their content: [1, 2]" in caplog.text
    assert coord.stats.dropped["shutdown"] == 2


async def test_submit_after_stop_is_refused(bus: FeedbackBus) -> None:
    coord = WriteCoordinator[int](sink=RecordingSink(), bus=bus)
    await coord.start()
    await coord.stop()
    with pytest.raises(QueueClosedError):
        await coord.submit(1)
    with pytest.raises(QueueClosedError):
        await coord.submit_many([1])
    await coord.stop()  # idempotent


async def test_submit_timeout_under_block(bus: FeedbackBus) -> None:
    coord = WriteCoordinator[int](
        sink=RecordingSink(), capacity=2, workers=1, submit_timeout=0.02, bus=bus
    )
    await coord.submit_many([1, 2])  # not started: nothing drains
    with pytest.raises(QueueFullError):
        await coord.submit(3)
    assert coord.stats.submitted == 2


async def test_drop_oldest_counts_drops_and_calls_user_callback(bus: FeedbackBus) -> None:
    seen: list[int] = []

    async def on_drop(item: int) -> None:
        seen.append(item)

    coord = WriteCoordinator[int](
        sink=RecordingSink(),
        capacity=3,
        overflow_strategy="drop_oldest",
        drop_callback=on_drop,
        bus=bus,
    )
    await coord.submit_many([1, 2, 3, 4, 5])
    assert seen == [1, 2]
    assert coord.stats.dropped["overflow"] == 2


async def test_submit_many_emits_same_transitions_as_submit() -> None:
    async def run(bulk: bool) -> list[tuple[str, int, str | None]]:
        rec, bus = Recorder(), FeedbackBus()
        bus.subscribe(rec)
        coord = WriteCoordinator[int](
            sink=RecordingSink(), capacity=100, high_watermark=80, low_watermark=40, bus=bus
        )
        for lo in range(0, 90, 30):
            chunk = list(range(lo, lo + 30))
            if bulk:
                await coord.submit_many(chunk)
            else:
                for item in chunk:
                    await coord.submit(item)
        return rec.transitions()

    assert await run(bulk=False) == await run(bulk=True)


async def test_poison_batch_good_items_written_bad_dead_lettered(
    bus: FeedbackBus, tmp_path: Path
) -> None:
    sink = PoisonSink(poison={42})
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    async with WriteCoordinator[int](
        sink=sink, capacity=1000, workers=2, batch_size=100, dead_letter_queue=dlq, bus=bus
    ) as coord:
        await coord.submit_many(list(range(300)))
    assert sorted(sink.items) == [i for i in range(300) if i != 42]
    assert [r.items for r in await dlq.replay()] == [[42]]
    assert coord.stats.dead_lettered == 1


async def test_outage_then_recovery_loses_nothing(bus: FeedbackBus) -> None:
    sink = OutageSink()
    sink.down.set()
    cb = CircuitBreaker(failure_threshold=2, half_open_after_sec=0.02)
    async with WriteCoordinator[int](
        sink=sink,
        capacity=1000,
        workers=4,
        batch_size=25,
        flush_interval=0.01,
        retry_policy=RetryPolicy(initial_backoff_ms=1, max_backoff_ms=5),
        circuit_breaker=cb,
        bus=bus,
    ) as coord:
        await coord.submit_many(list(range(400)))
        await until(lambda: cb.state != "closed", what="the breaker opened by the outage")
        assert coord.health().circuit_state in ("open", "half_open")
        assert coord.health().workers_alive == 4
        assert sink.items == []
        sink.down.clear()
        await asyncio.wait_for(coord.wait_idle(), 5)
        assert coord.health().circuit_state == "closed"
    assert sorted(sink.items) == list(range(400))
    assert coord.stats.write_errors["ConnectionError"] >= 2


async def test_health_snapshot(bus: FeedbackBus) -> None:
    coord = WriteCoordinator[int](sink=RecordingSink(), capacity=50, workers=3, bus=bus)
    await coord.submit_many([1, 2, 3])
    h = coord.health()
    assert (h.workers_alive, h.queue_size, h.capacity, h.circuit_state) == (0, 3, 50, "closed")
    await coord.start()
    await coord.start()  # idempotent
    assert coord.health().workers_alive == 3
    await coord.stop()
    assert coord.feedback_event().capacity == 50


@dataclass
class Bar:
    symbol: str
    close: Decimal


async def test_generic_subscription_works_for_every_generic_class(tmp_path: Path) -> None:
    from market_data_store.coordinator import BoundedQueue, SinkWorker

    class BarSink:
        def __init__(self) -> None:
            self.bars: list[Bar] = []

        async def write(self, batch: Sequence[Bar]) -> None:
            self.bars.extend(batch)

    sink = BarSink()
    bus = FeedbackBus()
    async with WriteCoordinator[Bar](sink=sink, bus=bus) as coord:
        await coord.submit(Bar("AAPL", Decimal("187.15")))
    assert sink.bars == [Bar("AAPL", Decimal("187.15"))]
    assert BoundedQueue[Bar](1, bus=bus).capacity == 1
    assert SinkWorker[Bar](0, BoundedQueue[Bar](1, bus=bus), sink).worker_id == 0
    assert DeadLetterQueue[Bar](tmp_path / "x.ndjson").item_type is Bar


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"capacity": 0}])
def test_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        WriteCoordinator[int](sink=RecordingSink(), **kwargs)  # type: ignore[arg-type]
