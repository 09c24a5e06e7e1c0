"""SinkWorker: flushing, retries, poison isolation, outages. A worker never dies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    BoundedQueue,
    CircuitBreaker,
    CoordinatorStats,
    DeadLetterQueue,
    FeedbackBus,
    RetryPolicy,
    SinkWorker,
)
from tests.support.waits import until

from .sinks import FlakySink, OutageSink, PoisonSink, RecordingSink

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_ms=1, max_backoff_ms=2)


def make_worker(q: BoundedQueue[int], sink: object, **kwargs: object) -> SinkWorker[int]:
    defaults: dict[str, object] = {
        "batch_size": 5,
        "flush_interval": 0.01,
        "retry_policy": FAST_RETRY,
    }
    defaults.update(kwargs)
    return SinkWorker[int](1, q, sink, **defaults)  # type: ignore[arg-type]


async def test_worker_retries_then_succeeds(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = FlakySink(fail_first_n=2)
    stats = CoordinatorStats()
    worker = make_worker(q, sink, stats=stats)
    worker.start()
    await q.put_many(list(range(10)))
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()
    assert sorted(sink.items) == list(range(10))
    assert stats.write_errors["TimeoutError"] == 2
    assert stats.items_written == 10


async def test_worker_survives_exhausted_retries_and_loses_nothing(bus: FeedbackBus) -> None:
    """Unlike the original library, running out of attempts does not kill the task."""
    q = BoundedQueue[int](100, bus=bus)
    sink = FlakySink(fail_first_n=7)  # more than max_attempts=3
    worker = make_worker(q, sink, circuit_breaker=CircuitBreaker(failure_threshold=100))
    worker.start()
    await q.put_many(list(range(5)))
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    assert worker.alive
    await worker.stop()
    assert sink.items == list(range(5))


async def test_worker_time_based_flush(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = RecordingSink()
    worker = make_worker(q, sink, batch_size=100, flush_interval=0.05)
    worker.start()
    await q.put_many([1, 2, 3, 4, 5])
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()
    assert sink.batches == [[1, 2, 3, 4, 5]]


async def test_worker_size_based_flush(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = RecordingSink()
    worker = make_worker(q, sink, batch_size=4, flush_interval=30.0)
    await q.put_many(list(range(8)))
    worker.start()
    # well before the 30 s flush interval
    await until(lambda: q.unfinished == 0, timeout=1.0, what="every item finished")
    await worker.stop()
    assert sink.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_poison_items_are_isolated_and_dead_lettered(
    bus: FeedbackBus, tmp_path: Path
) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = PoisonSink(poison={3, 13})
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    stats = CoordinatorStats()
    worker = make_worker(q, sink, batch_size=16, dead_letters=dlq, stats=stats)
    await q.put_many(list(range(16)))
    worker.start()
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()

    assert sorted(sink.items) == [i for i in range(16) if i not in (3, 13)]
    records = await dlq.replay()
    assert sorted(i for r in records for i in r.items) == [3, 13]
    assert all(len(r.items) == 1 for r in records)
    assert {r.error for r in records} == {
        "ValueError: invalid value 3",
        "ValueError: invalid value 13",
    }
    assert records[0].metadata["worker_id"] == 1
    assert stats.dead_lettered == 2
    # bisection, not one write per item: far fewer rejected writes than items
    assert sink.rejected_writes < 16


async def test_poison_without_dead_letter_queue_is_logged_not_silent(
    bus: FeedbackBus, caplog: pytest.LogCaptureFixture
) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = PoisonSink(poison={2})
    worker = make_worker(q, sink)
    worker.start()
    await q.put_many([1, 2, 3])
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()
    assert sorted(sink.items) == [1, 3]
    assert "no dead-letter queue is configured" in caplog.text
    assert "ValueError: invalid value 2" in caplog.text


async def test_outage_opens_breaker_worker_waits_then_writes_everything(
    bus: FeedbackBus,
) -> None:
    q = BoundedQueue[int](1000, bus=bus)
    sink = OutageSink()
    sink.down.set()
    cb = CircuitBreaker(failure_threshold=3, half_open_after_sec=0.05)
    worker = make_worker(q, sink, circuit_breaker=cb, batch_size=10)
    worker.start()
    await q.put_many(list(range(50)))

    await until(lambda: cb.state == "open", what="the breaker open", interval=0.005)
    assert cb.state == "open"
    attempts_when_open = sink.failed_attempts
    await asyncio.sleep(0.02)  # open: the worker waits instead of hammering the sink
    assert sink.failed_attempts == attempts_when_open
    assert worker.alive
    assert q.unfinished == 50

    sink.down.clear()  # the database comes back
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()
    assert sorted(sink.items) == list(range(50))
    assert cb.state == "closed"


async def test_bug_in_classifier_does_not_kill_worker(
    bus: FeedbackBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("market_data_store.coordinator.worker._PAUSE_AFTER_BUG_SEC", 0.001)
    calls = 0

    def buggy(exc: BaseException) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("classifier bug")
        return True

    q = BoundedQueue[int](10, bus=bus)
    sink = FlakySink(fail_first_n=2)
    policy = RetryPolicy(max_attempts=2, initial_backoff_ms=1, classify_retryable=buggy)
    worker = make_worker(q, sink, retry_policy=policy)
    worker.start()
    await q.put_many([1, 2])
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    assert worker.alive
    await worker.stop()
    assert sink.items == [1, 2]


async def test_dead_letter_save_is_retried_until_it_works(
    bus: FeedbackBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("market_data_store.coordinator.worker._DLQ_RETRY_SEC", 0.001)
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    real_save = dlq.save
    failures = 2

    async def flaky_save(*args: object, **kwargs: object) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("No space left on device")
        await real_save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dlq, "save", flaky_save)
    q = BoundedQueue[int](10, bus=bus)
    worker = make_worker(q, PoisonSink(poison={1}), dead_letters=dlq)
    worker.start()
    await q.put(1)
    await until(lambda: q.unfinished == 0, timeout=5, what="every item finished")
    await worker.stop()
    assert [r.items for r in await dlq.replay()] == [[1]]


async def test_stop_lets_the_batch_in_hand_finish(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = RecordingSink(delay=0.05)
    worker = make_worker(q, sink, batch_size=3, flush_interval=0)
    worker.start()
    await q.put_many([1, 2, 3, 4, 5, 6])
    await until(lambda: worker.inflight is not None, what="the first batch being written")
    await worker.stop()
    assert sink.batches == [[1, 2, 3]]
    assert not worker.alive
    assert worker.inflight is None
    assert q.size == 3  # the rest stays queued for whoever drains it


async def test_stop_timeout_cancels_and_keeps_inflight_for_rescue(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](100, bus=bus)
    sink = RecordingSink(delay=10)
    worker = make_worker(q, sink, batch_size=3, flush_interval=0)
    worker.start()
    await q.put_many([1, 2, 3])
    await until(lambda: worker.inflight is not None, what="the batch being written")
    await worker.stop(timeout=0.02)
    assert not worker.alive
    assert worker.inflight is not None
    assert worker.inflight.rest == (0, [1, 2, 3])


async def test_start_is_idempotent_and_stop_before_start_is_harmless(bus: FeedbackBus) -> None:
    q = BoundedQueue[int](10, bus=bus)
    worker = make_worker(q, RecordingSink())
    await worker.stop()
    worker.start()
    worker.start()
    assert worker.alive
    await worker.stop()
    assert not worker.alive


def test_batch_size_must_be_positive(bus: FeedbackBus) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SinkWorker[int](1, BoundedQueue[int](10, bus=bus), RecordingSink(), batch_size=0)
