"""What controllers receive, and only this way: one ``Provide`` per component, under
the name a handler declares it by (``coordinator: NamedDependency[WriteCoordinator[Row]]``);
the decoders are no dependency of their own, the write routes reach them through
``ingest`` (see ``Ingest``). Tests replace any of them by name
(``create_app(settings, dependencies=...)``).

The providers take no parameters: a provider without parameters skips Litestar's
per-request argument parsing, which for a probe costs more than the probe itself.
Settings, lifecycle and telemetry exist from the app's creation; the rest once the
lifespan built them (asked for earlier, a provider raises: a 500).
"""

from __future__ import annotations

from collections.abc import Callable

from litestar.di import Provide

from market_data_store.config import Settings
from market_data_store.coordinator import FeedbackBus, Shares, WriteCoordinator
from market_data_store.feedback import FeedbackChannels, FeedbackFanout
from market_data_store.service import Components, HealthSources, Lifecycle, Tenants
from market_data_store.storage import DbPool, Reader, Retention, Row
from market_data_store.telemetry import Telemetry

from .writes import Ingest


def providers(
    running: Callable[[], Components],
    settings: Settings,
    lifecycle: Lifecycle,
    telemetry: Telemetry,
) -> dict[str, Provide]:
    """The providers of the service whose running components ``running()`` returns."""

    def provide_settings() -> Settings:
        return settings

    def provide_lifecycle() -> Lifecycle:
        return lifecycle

    def provide_telemetry() -> Telemetry:
        return telemetry

    def provide_db_pool() -> DbPool:
        return running().db_pool

    def provide_reader() -> Reader:
        return running().reader

    def provide_coordinator() -> WriteCoordinator[Row]:
        return running().coordinator

    built: list[tuple[Components, Ingest]] = []  # the ingest of the running components

    def provide_ingest() -> Ingest:
        components = running()
        if not built or built[0][0] is not components:
            c = components
            ingest = Ingest(
                c.coordinator,
                lifecycle,
                settings,
                c.tenants,
                c.tenant_shares,
                c.bar_decoder,
                c.fact_decoder,
            )
            built[:] = [(c, ingest)]
        return built[0][1]

    def provide_tenants() -> Tenants:
        return running().tenants

    def provide_tenant_shares() -> Shares:
        return running().tenant_shares

    def provide_feedback_bus() -> FeedbackBus:
        return running().feedback_bus

    def provide_feedback_channels() -> FeedbackChannels:
        return running().feedback_channels

    def provide_feedback_fanout() -> FeedbackFanout:
        return running().feedback_fanout

    def provide_health_sources() -> HealthSources:
        return running().health_sources

    def provide_retention() -> Retention:
        return running().retention

    functions: dict[str, Callable[[], object]] = {
        "settings": provide_settings,
        "lifecycle": provide_lifecycle,
        "telemetry": provide_telemetry,
        "db_pool": provide_db_pool,
        "reader": provide_reader,
        "coordinator": provide_coordinator,
        "ingest": provide_ingest,
        "tenants": provide_tenants,
        "tenant_shares": provide_tenant_shares,
        "feedback_bus": provide_feedback_bus,
        "feedback_channels": provide_feedback_channels,
        "feedback_fanout": provide_feedback_fanout,
        "health_sources": provide_health_sources,
        "retention": provide_retention,
    }
    return {name: Provide(fn, sync_to_thread=False) for name, fn in functions.items()}
