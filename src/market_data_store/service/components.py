"""What the service is made of, built in one place: ``components(settings)``.

Up: database (embedded when no URL is configured) → migrations (when configured) →
feedback delivery (SSE fan-out, webhook, Redis) → database monitor → bars coordinator;
then the coordinator's current level is published, so every channel knows it from
the start.
Down, in reverse: shutdown is announced first (readiness fails, streams end) → the
coordinator drains (bounded by ``coordinator.drain_timeout``; the rest is
dead-lettered; its last events still go out; the monitor still half-opens the breaker
if the database comes back) → monitor stops → feedback channels flush (each bounded
by its timeout) → the pool closes → the embedded database stops.

The HTTP app (``http.plugin.ServicePlugin``) enters this in its lifespan and hands
each component to the controllers; ``mds-store migrate`` and tests use
the same parts without HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from market_data_store import __version__
from market_data_store.config import Settings, redact_url
from market_data_store.coordinator import CircuitBreaker, FeedbackBus, Shares, WriteCoordinator
from market_data_store.feedback import FeedbackChannels, FeedbackFanout
from market_data_store.ingest import BarDecoder, FactDecoder
from market_data_store.storage import (
    DatabaseMonitor,
    DbPool,
    Reader,
    Retention,
    Row,
    prepare_connection,
)
from market_data_store.telemetry import Telemetry, build_telemetry

from .database import migrate, open_database
from .delivery import feedback_delivery
from .health import HealthSources
from .lifecycle import Lifecycle
from .retention import build_retention
from .tenants import Tenants
from .write_path import tenant_shares, write_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """The running service's parts; each is one dependency of the HTTP controllers,
    under its field name, except ``db_monitor`` (the health sources read it) and the
    decoders, which the write routes reach through ``ingest`` (one dependency per
    write route: see ``http.writes.Ingest``)."""

    settings: Settings
    lifecycle: Lifecycle
    telemetry: Telemetry
    db_pool: DbPool
    feedback_bus: FeedbackBus
    feedback_channels: FeedbackChannels
    db_monitor: DatabaseMonitor
    coordinator: WriteCoordinator[Row]
    tenants: Tenants
    tenant_shares: Shares
    reader: Reader
    bar_decoder: BarDecoder
    fact_decoder: FactDecoder
    health_sources: HealthSources
    retention: Retention

    @property
    def feedback_fanout(self) -> FeedbackFanout:
        return self.feedback_channels.fanout


@asynccontextmanager
async def components(
    settings: Settings,
    *,
    lifecycle: Lifecycle | None = None,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[Components]:
    """Build the service's components in order and tear them down in reverse (see the
    module docstring). ``lifecycle`` and ``telemetry`` exist before the components
    (the server and ``/metrics`` need them first): given, they stay their owner's
    (telemetry is not shut down here); left out, they are made and ended here.
    Raises ``StartupError`` (one line) when the database cannot be used."""
    lifecycle = lifecycle or Lifecycle()
    lifecycle.bind(asyncio.get_running_loop())
    async with AsyncExitStack() as stack:
        if telemetry is None:
            telemetry = build_telemetry(__version__)
            stack.callback(telemetry.shutdown)
        instruments = telemetry.instruments
        db = await stack.enter_async_context(
            open_database(settings, init=prepare_connection, give_up=lifecycle.shutdown_event)
        )
        if settings.database_url:  # the embedded one says where it runs itself
            log.info("using database %s", redact_url(settings.database_url))
        if settings.database.auto_migrate:
            applied, _ = await migrate(db.pool, settings)
            log.info("schema up to date (%d migration(s) applied now)", len(applied))
        bus = FeedbackBus()
        channels = await stack.enter_async_context(
            feedback_delivery(settings, bus, instruments, streams_end=lifecycle.shutdown_event)
        )
        link = _BreakerLink()
        monitor = await stack.enter_async_context(_monitor(settings, db.url, link))
        coordinator = await stack.enter_async_context(
            write_path(settings, db.pool, bus, instruments)
        )
        link.breaker = coordinator.breaker
        # the current level of our coordinator, before any transition: streams,
        # /v1/feedback/state, the webhook and other replicas know it from the start
        await bus.publish(coordinator.feedback_event("service_started"))
        health = HealthSources(
            monitor, coordinator, channels, lifecycle, settings.coordinator.workers
        )
        instruments.service.track(lambda: health.render("readiness")[1])
        stack.callback(instruments.service.untrack)
        d = settings.database
        bar_decoder = BarDecoder()
        exports = settings.reads.max_exports
        reader = Reader(  # the writers' connections, the exports', one for admin calls
            db.pool,
            max_concurrent=d.pool_max_size - settings.coordinator.workers - 1 - exports,
            acquire_timeout=d.connect_timeout,
            max_exports=exports,
            export_timeout=settings.reads.export_timeout,
        )
        # exports end when shutdown begins (as feedback streams do: uvicorn waits for
        # open connections first); their clients resume elsewhere from their cursor
        stopper = asyncio.create_task(_stop_at(lifecycle.shutdown_event, reader.stop))
        stack.push_async_callback(_cancelled, stopper)
        stack.callback(reader.stop)  # and before the pool closes, whatever happened
        built = Components(
            settings=settings,
            lifecycle=lifecycle,
            telemetry=telemetry,
            db_pool=db.pool,
            feedback_bus=bus,
            feedback_channels=channels,
            db_monitor=monitor,
            coordinator=coordinator,
            tenants=Tenants.of_settings(settings),
            tenant_shares=tenant_shares(settings, coordinator),
            reader=reader,
            bar_decoder=bar_decoder,  # its clock, known symbols, one-large-body gate
            fact_decoder=FactDecoder(bar_decoder.clock, bar_decoder.gate),
            health_sources=health,
            retention=build_retention(settings, db.pool),
        )
        instruments.retention.track(built.retention.stats)
        log.info("market-data-store ready (instance %s)", settings.server.resolved_instance_id)
        try:
            yield built
        finally:
            lifecycle.begin_shutdown()


async def _stop_at(event: asyncio.Event, stop: Callable[[], None]) -> None:
    await event.wait()
    stop()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _BreakerLink:
    """The write path's breaker as the database monitor sees it (the monitor starts
    before the coordinator, whose breaker it then watches)."""

    breaker: CircuitBreaker | None = None

    def failing(self) -> bool:
        return self.breaker is not None and self.breaker.state != "closed"

    def on_reachable(self) -> None:
        # the database answers: an open breaker tries one write now, not at its timer
        if self.breaker is not None:
            self.breaker.half_open_now()


@asynccontextmanager
async def _monitor(
    settings: Settings, url: str, link: _BreakerLink
) -> AsyncIterator[DatabaseMonitor]:
    """The database monitor, started. Entered before the write path, so it stops after
    the coordinator drained: a database back during the drain still half-opens the
    breaker, and the queue is written, not dead-lettered."""
    db = settings.database
    monitor = DatabaseMonitor(
        url,
        db.health_interval,
        db.health_timeout,
        failing_interval=db.health_interval_failing,
        failing=link.failing,
        on_reachable=link.on_reachable,
    )
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()
