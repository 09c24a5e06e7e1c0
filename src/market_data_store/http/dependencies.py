"""What controllers receive, and only this way: each provider reads ``app.state``,
filled by the lifespan. Tests replace any of them by key in ``create_app``."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from market_data_store.config import Settings
from market_data_store.coordinator import FeedbackBus, WriteCoordinator
from market_data_store.storage import BarRow, DbPool
from market_data_store.telemetry import Telemetry

from .health import HealthSources
from .lifecycle import Lifecycle


def provide_db_pool(state: State) -> DbPool:
    pool: DbPool = state.db_pool
    return pool


def provide_coordinator(state: State) -> WriteCoordinator[BarRow]:
    coordinator: WriteCoordinator[BarRow] = state.coordinator
    return coordinator


def provide_feedback_bus(state: State) -> FeedbackBus:
    bus: FeedbackBus = state.feedback_bus
    return bus


def provide_health_sources(state: State) -> HealthSources:
    sources: HealthSources = state.health_sources
    return sources


def provide_lifecycle(state: State) -> Lifecycle:
    lifecycle: Lifecycle = state.lifecycle
    return lifecycle


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_telemetry(state: State) -> Telemetry:
    telemetry: Telemetry = state.telemetry
    return telemetry


DEPENDENCIES: dict[str, Provide] = {
    "db_pool": Provide(provide_db_pool, sync_to_thread=False),
    "coordinator": Provide(provide_coordinator, sync_to_thread=False),
    "feedback_bus": Provide(provide_feedback_bus, sync_to_thread=False),
    "health_sources": Provide(provide_health_sources, sync_to_thread=False),
    "lifecycle": Provide(provide_lifecycle, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "telemetry": Provide(provide_telemetry, sync_to_thread=False),
}
