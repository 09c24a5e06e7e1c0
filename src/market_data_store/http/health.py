"""Health and readiness, assembled from in-memory state only.

The bodies mirror Core's ``HealthStatus`` field for field (they validate with
``HealthStatus.model_validate_json``) but are msgspec Structs: a probe costs a
few microseconds to build and encode, and never touches the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from market_data_store import __version__
from market_data_store.coordinator import BackpressureLevel, FeedbackBus, WriteCoordinator
from market_data_store.storage import DatabaseMonitor

from .lifecycle import Lifecycle

SERVICE = "market-data-store"
State = Literal["healthy", "degraded", "unhealthy"]


class Component(msgspec.Struct):
    """Core ``HealthComponent``."""

    name: str
    state: State
    details: dict[str, str] = {}


class HealthReport(msgspec.Struct):
    """Core ``HealthStatus`` plus ``ok`` for consumers that expect ``{"ok": true}``."""

    service: str
    state: State
    components: list[Component]
    version: str
    ts: float
    ok: bool


def database_component(monitor: DatabaseMonitor) -> Component:
    s = monitor.status
    details = {
        "reachable": str(s.reachable).lower(),
        "checked_ago_s": f"{time.time() - s.checked_at:.1f}" if s.checked_at else "never",
    }
    if s.latency_ms is not None:
        details["latency_ms"] = f"{s.latency_ms:.1f}"
    if s.error:
        details["error"] = s.error
    return Component("database", "healthy" if s.reachable else "unhealthy", details)


def coordinator_component(coordinator: WriteCoordinator[Any], workers: int) -> Component:
    h = coordinator.health()
    level = coordinator.level
    details = {
        "queue_size": str(h.queue_size),
        "capacity": str(h.capacity),
        "utilization": f"{h.queue_size / h.capacity:.3f}",
        "level": level.value,
        "circuit_state": h.circuit_state,
        "workers_alive": str(h.workers_alive),
        "workers": str(workers),
    }
    state: State = "healthy"
    if h.circuit_state == "open" or h.workers_alive < workers:
        state = "unhealthy"
    elif h.circuit_state == "half_open" or level is not BackpressureLevel.ok:
        state = "degraded"
    return Component("coordinator", state, details)


def feedback_component(bus: FeedbackBus) -> Component:
    return Component("feedback", "healthy", {"subscribers": str(bus.subscriber_count)})


def lifecycle_component(lifecycle: Lifecycle) -> Component:
    if lifecycle.shutting_down:
        return Component("lifecycle", "unhealthy", {"phase": "shutting_down"})
    return Component("lifecycle", "healthy", {"phase": "running"})


@dataclass(frozen=True)
class HealthSources:
    """Everything a probe reads, bundled so a probe resolves one dependency
    (Litestar resolves several dependencies of one handler in a task group,
    which would cost more than the probe itself)."""

    db_monitor: DatabaseMonitor
    coordinator: WriteCoordinator[Any]
    feedback_bus: FeedbackBus
    lifecycle: Lifecycle
    workers: int

    def components(self) -> list[Component]:
        return [
            database_component(self.db_monitor),
            coordinator_component(self.coordinator, self.workers),
            feedback_component(self.feedback_bus),
            lifecycle_component(self.lifecycle),
        ]

    def liveness(self) -> HealthReport:
        """Alive whatever the dependencies say: degraded, never a failure, when they fail."""
        components = self.components()
        return _report(components, _overall(components), ok=True)

    def readiness(self) -> HealthReport:
        """Ready unless the database is unreachable, the breaker is open or we are stopping."""
        components = self.components()
        database, coordinator, _, lifecycle = components
        ready = (
            database.state != "unhealthy"
            and lifecycle.state != "unhealthy"
            and coordinator.details["circuit_state"] != "open"
        )
        return _report(components, _overall(components) if ready else "unhealthy", ok=ready)


def _overall(components: list[Component]) -> State:
    return "healthy" if all(c.state == "healthy" for c in components) else "degraded"


def _report(components: list[Component], state: State, *, ok: bool) -> HealthReport:
    return HealthReport(SERVICE, state, components, __version__, time.time(), ok)
