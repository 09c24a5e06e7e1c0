"""The write path: the coordinator (bounded queue, batching workers, retries, breaker,
dead letters) writing every kind to PostgreSQL through ``StoreSink`` (bars to
``BarsSink``, options, quotes, trades, fundamentals and news to ``FactSink``): one
queue, one capacity, one feedback ``coordinator_id`` for the store's one database.
Settings are mapped to the library's plain arguments here, and only here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from market_data_store.config import Settings
from market_data_store.coordinator import (
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    ItemDecoder,
    RetryPolicy,
    Shares,
    WriteCoordinator,
)
from market_data_store.storage import (
    BarsSink,
    DbPool,
    FactSink,
    Row,
    StoreSink,
    decode_row,
    is_retryable,
)
from market_data_store.telemetry import Instruments

BARS = "bars"
FACTS = "facts"  # the sink of options, quotes, trades, fundamentals and news


def build_coordinator(
    settings: Settings, sink: StoreSink, bus: FeedbackBus
) -> WriteCoordinator[Row]:
    c, r, breaker = settings.coordinator, settings.retry, settings.circuit_breaker
    return WriteCoordinator[Row](
        sink=sink,
        capacity=c.capacity,
        workers=c.workers,
        batch_size=c.resolved_batch_size,
        flush_interval=c.flush_interval,
        high_watermark=c.resolved_high_watermark,
        low_watermark=c.resolved_low_watermark,
        overflow_strategy=c.overflow_strategy,
        retry_policy=RetryPolicy(
            max_attempts=r.max_attempts,
            initial_backoff_ms=r.initial_backoff_ms,
            max_backoff_ms=r.max_backoff_ms,
            backoff_multiplier=r.backoff_multiplier,
            jitter=r.jitter,
            classify_retryable=is_retryable,
        ),
        circuit_breaker=CircuitBreaker(
            failure_threshold=breaker.failure_threshold,
            half_open_after_sec=breaker.half_open_after_sec,
        ),
        coord_id=f"{settings.server.resolved_instance_id}/{BARS}",
        dead_letter_queue=DeadLetterQueue[Row](
            c.dead_letter_path, item_type=ItemDecoder(decode_row)
        ),
        bus=bus,
        submit_timeout=_submit_wait(settings),
    )


def _submit_wait(settings: Settings) -> float | None:
    """How long a submit may wait for room: ``submit_timeout`` under ``block``."""
    c = settings.coordinator
    return c.submit_timeout if c.overflow_strategy == "block" else None


def tenant_shares(settings: Settings, coordinator: WriteCoordinator[Row]) -> Shares:
    """Each tenant's part of the coordinator: ``coordinator.tenant_share`` of its
    capacity once two or more tenants are configured; unbounded otherwise."""
    several = len(settings.auth.tenants) > 1
    cap = max(1, int(settings.coordinator.tenant_share * coordinator.queue.capacity))
    patience = _submit_wait(settings) or 0.0  # a tenant beyond its share waits as for room
    return Shares(coordinator.queue.completions, cap if several else None, patience)


@asynccontextmanager
async def write_path(
    settings: Settings, pool: DbPool, bus: FeedbackBus, instruments: Instruments
) -> AsyncIterator[WriteCoordinator[Row]]:
    """The started coordinator; on the way out it drains (bounded by
    ``coordinator.drain_timeout``; the rest is dead-lettered), its counts still exported."""
    async with AsyncExitStack() as stack:
        fast = settings.database.copy_fast_path
        sink = StoreSink(BarsSink(pool, fast_path=fast), FactSink(pool, fast_path=fast))
        coordinator = build_coordinator(settings, sink, bus)
        instruments.coordinator.track(coordinator)
        stack.callback(instruments.coordinator.untrack, coordinator)  # after the drain
        await coordinator.start()
        stack.push_async_callback(
            coordinator.stop, drain=True, timeout=settings.coordinator.drain_timeout
        )
        instruments.sink.track(sink.bars, BARS)
        instruments.sink.track(sink.facts, FACTS)
        yield coordinator
