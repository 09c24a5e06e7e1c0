"""Start-up and shut-down of the service's components, one context manager per concern.

Up: database (embedded when no URL is configured) → pool → migrations →
feedback delivery (SSE fan-out, webhook, Redis) → database monitor → bars
coordinator (PostgreSQL sink); each stored on ``app.state`` for the dependency
providers.
Down, in reverse: readiness fails and feedback streams end at once (the
lifecycle's shutdown event) → the coordinator drains (bounded by
``coordinator.drain_timeout``; the rest is dead-lettered; its last events still
go out; the monitor still half-opens the breaker if the database comes back) →
monitor stops → feedback channels flush (each bounded by its timeout) → the pool
closes → the embedded database stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from litestar import Litestar

from market_data_store.config import Settings, endpoint_origin, redact_text, redact_url
from market_data_store.coordinator import (
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    RetryPolicy,
    WriteCoordinator,
)
from market_data_store.feedback import (
    FeedbackChannels,
    FeedbackFanout,
    HttpFeedbackBroadcaster,
    RedisFeedbackBridge,
    RedisFeedbackPublisher,
)
from market_data_store.storage import (
    BarReader,
    BarRow,
    BarsSink,
    DatabaseMonitor,
    DatabaseUnavailableError,
    DbPool,
    MigrationError,
    apply_migrations,
    connection,
    is_retryable,
)
from market_data_store.storage.database import CONNECT_ERRORS, database, describe_failure
from market_data_store.telemetry import (
    CoordinatorInstruments,
    FeedbackInstruments,
    ServiceInstruments,
    SinkInstruments,
    Telemetry,
)

from .health import HealthSources
from .lifecycle import Lifecycle

log = logging.getLogger(__name__)

BARS = "bars"


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
        pool, url = await stack.enter_async_context(_database(settings, lifecycle))
        bus = FeedbackBus()
        channels = await stack.enter_async_context(
            _feedback_delivery(settings, bus, lifecycle, app.state.feedback_instruments)
        )
        db = settings.database
        breaker: CircuitBreaker | None = None  # the write path's, once it exists

        def failing() -> bool:
            return breaker is not None and breaker.state != "closed"

        def on_reachable() -> None:
            # the database answers: an open breaker tries one write now, not at its timer
            if breaker is not None:
                breaker.half_open_now()

        monitor = DatabaseMonitor(
            url,
            db.health_interval,
            db.health_timeout,
            failing_interval=db.health_interval_failing,
            failing=failing,
            on_reachable=on_reachable,
        )
        await monitor.start()
        # stopped after the coordinator has drained: a database back during the drain
        # still half-opens the breaker, and the queue is written, not dead-lettered
        stack.push_async_callback(monitor.stop)
        coordinator = await stack.enter_async_context(_write_path(app, settings, pool, bus))
        breaker = coordinator.breaker
        # the current level of our coordinator, before any transition: streams,
        # /v1/feedback/state, the webhook and other replicas know it from the start
        await bus.publish(coordinator.feedback_event("service_started"))

        app.state.update(
            {
                "db_pool": pool,
                "feedback_bus": bus,
                "feedback_channels": channels,
                "feedback_fanout": channels.fanout,
                "coordinator": coordinator,
                "db_monitor": monitor,
                "bar_reader": BarReader(
                    pool,
                    # leave the writers their connections (and one for admin calls)
                    max_concurrent=db.pool_max_size - settings.coordinator.workers - 1,
                    acquire_timeout=db.connect_timeout,
                ),
                "health_sources": HealthSources(
                    monitor, coordinator, channels, lifecycle, settings.coordinator.workers
                ),
            }
        )
        health: HealthSources = app.state.health_sources
        service_instruments: ServiceInstruments = app.state.service_instruments
        service_instruments.track(lambda: health.render("readiness")[1])
        stack.callback(service_instruments.untrack)
        log.info("market-data-store ready (instance %s)", settings.server.resolved_instance_id)
        try:
            yield
        finally:
            lifecycle.begin_shutdown()


@asynccontextmanager
async def _database(settings: Settings, lifecycle: Lifecycle) -> AsyncIterator[tuple[DbPool, str]]:
    """The pool (on the configured or the embedded database), migrated when configured."""
    db = settings.database
    async with AsyncExitStack() as stack:
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
        except CONNECT_ERRORS as exc:
            target = redact_url(settings.database_url) if settings.database_url else "(embedded)"
            why = describe_failure(
                target, exc, db.startup_timeout, shutting_down=lifecycle.shutting_down
            )
            raise StartupError(redact_text(why)) from None
        if settings.database_url:  # the embedded one says where it runs itself
            log.info("using database %s", redact_url(settings.database_url))
        if db.auto_migrate:
            try:
                async with connection(pool, timeout=db.connect_timeout) as conn:
                    applied = await apply_migrations(conn)
            except MigrationError as exc:
                raise StartupError(str(exc)) from None
            except DatabaseUnavailableError as exc:
                raise StartupError(f"schema migration: {exc}") from None
            log.info("schema up to date (%d migration(s) applied now)", len(applied))
        yield pool, url


@asynccontextmanager
async def _write_path(
    app: Litestar, settings: Settings, pool: DbPool, bus: FeedbackBus
) -> AsyncIterator[WriteCoordinator[BarRow]]:
    """The bars coordinator writing to PostgreSQL; drained (bounded) on the way out."""
    async with AsyncExitStack() as stack:
        sink = BarsSink(pool, fast_path=settings.database.copy_fast_path)
        coordinator = build_coordinator(settings, sink, bus)
        instruments: CoordinatorInstruments = app.state.coordinator_instruments
        instruments.track(coordinator)
        stack.callback(instruments.untrack, coordinator)  # after the drain: its counts export
        await coordinator.start()
        stack.push_async_callback(
            coordinator.stop, drain=True, timeout=settings.coordinator.drain_timeout
        )
        sink_instruments: SinkInstruments = app.state.sink_instruments
        sink_instruments.track(sink, BARS)
        yield coordinator


@asynccontextmanager
async def _feedback_delivery(
    settings: Settings,
    bus: FeedbackBus,
    lifecycle: Lifecycle,
    instruments: FeedbackInstruments,
) -> AsyncIterator[FeedbackChannels]:
    """SSE fan-out (always: it also serves /v1/feedback/state), the webhook and Redis
    when configured. Streams end when the lifecycle's shutdown event fires; the
    channels stop after the coordinator drained, so its last events still go out."""
    f = settings.feedback
    async with AsyncExitStack() as stack:
        fanout = FeedbackFanout(
            history=f.sse.history,
            subscriber_queue=f.sse.subscriber_queue,
            max_subscribers=f.sse.max_streams,
            heartbeat_sec=f.sse.heartbeat_sec,
        )
        fanout.start(lifecycle.shutdown_event)
        stack.push_async_callback(fanout.stop)
        bus.subscribe(fanout.on_local_event)

        webhook = None
        if f.webhook.url:
            webhook = HttpFeedbackBroadcaster(
                f.webhook.url,
                timeout=f.webhook.timeout,
                max_retries=f.webhook.max_attempts,
                bus=bus,
                queue_size=f.webhook.queue_size,
            )
            await webhook.start()
            stack.push_async_callback(webhook.stop)
            log.info("feedback webhook on: %s", endpoint_origin(f.webhook.url))

        publisher = bridge = None
        if f.redis.url:
            publisher = RedisFeedbackPublisher(
                f.redis.url,
                f.redis.channel,
                instance_id=settings.server.resolved_instance_id,
                latest=fanout.local_events,
                queue_size=f.redis.queue_size,
                timeout=f.redis.timeout,
            )
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            bus.subscribe(publisher.publish)
            bridge = RedisFeedbackBridge(
                f.redis.url, f.redis.channel, fanout, timeout=f.redis.timeout
            )
            await bridge.start()
            stack.push_async_callback(bridge.stop)
            log.info("feedback via Redis %s, channel %s", redact_url(f.redis.url), f.redis.channel)

        channels = FeedbackChannels(fanout, webhook, publisher, bridge)
        instruments.track(channels)
        stack.callback(instruments.untrack)
        yield channels


def build_coordinator(
    settings: Settings, sink: BarsSink, bus: FeedbackBus
) -> WriteCoordinator[BarRow]:
    c, r, cb = settings.coordinator, settings.retry, settings.circuit_breaker
    return WriteCoordinator[BarRow](
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
            failure_threshold=cb.failure_threshold, half_open_after_sec=cb.half_open_after_sec
        ),
        coord_id=f"{settings.server.resolved_instance_id}/{BARS}",
        dead_letter_queue=DeadLetterQueue[BarRow](c.dead_letter_path),
        bus=bus,
        submit_timeout=c.submit_timeout if c.overflow_strategy == "block" else None,
    )
