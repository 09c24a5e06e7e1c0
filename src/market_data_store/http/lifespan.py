"""Start-up and shut-down of the service's components, in order.

Up: database (embedded when no URL is configured) → pool → migrations →
feedback bus → bars coordinator (PostgreSQL sink) → database monitor; each
stored on ``app.state`` for the dependency providers.
Down, in reverse: readiness fails at once → monitor stops → the coordinator
drains (bounded by ``coordinator.drain_timeout``; the rest is dead-lettered) →
the pool closes → the embedded database stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from litestar import Litestar

from market_data_store.config import Settings, redact_url
from market_data_store.coordinator import (
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    RetryPolicy,
    WriteCoordinator,
)
from market_data_store.storage import (
    BarReader,
    BarRow,
    BarsSink,
    DatabaseMonitor,
    MigrationError,
    apply_migrations,
    is_retryable,
)
from market_data_store.storage.database import database
from market_data_store.storage.pool import PERMANENT_ERRORS
from market_data_store.telemetry import CoordinatorInstruments, SinkInstruments, Telemetry

from .health import HealthSources
from .lifecycle import Lifecycle

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why in one line."""


@asynccontextmanager
async def service_lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    lifecycle: Lifecycle = app.state.lifecycle
    telemetry: Telemetry = app.state.telemetry
    lifecycle.bind(asyncio.get_running_loop())
    async with AsyncExitStack() as stack:
        stack.callback(telemetry.shutdown)
        db = settings.database
        try:
            pool, url = await stack.enter_async_context(
                database(
                    settings.database_url,
                    db.embedded_dir,
                    min_size=db.pool_min_size,
                    max_size=db.pool_max_size,
                    connect_timeout=db.connect_timeout,
                    command_timeout=db.command_timeout,
                    startup_timeout=db.startup_timeout,
                    give_up=lifecycle.shutdown_event,
                )
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if lifecycle.shutting_down:
                why = "shutdown requested while waiting for it"
            elif isinstance(exc, PERMANENT_ERRORS):
                why = "not usable"
            else:
                why = f"not reachable within {db.startup_timeout:g}s"
            target = redact_url(settings.database_url) if settings.database_url else "(embedded)"
            raise StartupError(f"database {target} {why}: {type(exc).__name__}: {exc}") from None
        if db.auto_migrate:
            try:
                async with pool.acquire() as conn:
                    applied = await apply_migrations(conn)
            except MigrationError as exc:
                raise StartupError(str(exc)) from None
            log.info("schema up to date (%d migration(s) applied now)", len(applied))

        bus = FeedbackBus()
        sink = BarsSink(pool)
        coordinator = build_coordinator(settings, sink, bus)
        instruments: CoordinatorInstruments = app.state.coordinator_instruments
        instruments.track(coordinator)
        stack.callback(instruments.untrack, coordinator)  # after the drain: its counts export
        await coordinator.start()
        stack.push_async_callback(
            coordinator.stop, drain=True, timeout=settings.coordinator.drain_timeout
        )
        sink_instruments: SinkInstruments = app.state.sink_instruments
        sink_instruments.track(sink, "bars")

        monitor = DatabaseMonitor(url, db.health_interval, db.health_timeout)
        await monitor.start()
        stack.push_async_callback(monitor.stop)

        app.state.update(
            {
                "db_pool": pool,
                "feedback_bus": bus,
                "coordinator": coordinator,
                "bars_sink": sink,
                "db_monitor": monitor,
                "bar_reader": BarReader(
                    pool,
                    # leave the writers their connections (and one for admin calls)
                    max_concurrent=db.pool_max_size - settings.coordinator.workers - 1,
                    acquire_timeout=db.connect_timeout,
                ),
                "health_sources": HealthSources(
                    monitor, coordinator, bus, lifecycle, settings.coordinator.workers
                ),
            }
        )
        log.info("market-data-store ready")
        try:
            yield
        finally:
            lifecycle.begin_shutdown()


def build_coordinator(
    settings: Settings, sink: BarsSink, bus: FeedbackBus
) -> WriteCoordinator[BarRow]:
    c, r, cb = settings.coordinator, settings.retry, settings.circuit_breaker
    return WriteCoordinator[BarRow](
        sink=sink,
        capacity=c.capacity,
        workers=c.workers,
        batch_size=c.batch_size,
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
            failure_threshold=cb.failure_threshold, half_open_after_sec=cb.half_open_after_sec
        ),
        coord_id="bars",
        dead_letter_queue=DeadLetterQueue[BarRow](c.dead_letter_path),
        bus=bus,
        submit_timeout=c.submit_timeout if c.overflow_strategy == "block" else None,
    )
