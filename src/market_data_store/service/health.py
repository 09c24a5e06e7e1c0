"""Health and readiness, assembled from in-memory state only.

The bodies mirror Core's ``HealthStatus`` field for field (they validate with
``HealthStatus.model_validate_json``) but are msgspec Structs: a probe costs a
few microseconds to build and encode, and never touches the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import msgspec

from market_data_store import __version__
from market_data_store.coordinator import BackpressureLevel, WriteCoordinator
from market_data_store.feedback import ChannelsStatus, FeedbackChannels
from market_data_store.storage import DatabaseMonitor, DatabaseStatus

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


def database_component(status: DatabaseStatus, *, detail: bool = False) -> Component:
    """``error`` is a category; ``detail`` (the driver's text, which may name hosts)
    only in the authenticated view."""
    details = {
        "reachable": str(status.reachable).lower(),
        "checked_at": _iso(status.checked_at) if status.checked_at else "never",
    }
    if status.latency_ms is not None:
        details["latency_ms"] = f"{status.latency_ms:.1f}"
    if status.error:
        details["error"] = status.error
        if detail and status.detail:
            details["detail"] = status.detail
    return Component("database", "healthy" if status.reachable else "unhealthy", details)


class CoordinatorFigures(NamedTuple):
    queue_size: int
    capacity: int
    level: BackpressureLevel
    circuit_state: str
    workers_alive: int


def coordinator_component(figures: CoordinatorFigures, workers: int) -> Component:
    queue_size, capacity, level, circuit_state, workers_alive = figures
    details = {
        "queue_size": str(queue_size),
        "capacity": str(capacity),
        "utilization": f"{queue_size / capacity:.3f}",
        "level": level.value,
        "circuit_state": circuit_state,
        "workers_alive": str(workers_alive),
        "workers": str(workers),
    }
    state: State = "healthy"
    if circuit_state != "closed" or workers_alive < workers:
        state = "unhealthy"
    elif level is not BackpressureLevel.ok:
        state = "degraded"
    return Component("coordinator", state, details)


def feedback_component(status: ChannelsStatus, *, detail: bool = False) -> Component:
    """SSE streams, webhook and Redis. Degraded (never unhealthy) when a channel fails:
    ingest and storage do not depend on them. ``redis_error`` is a category; its
    ``redis_error_detail`` only in the authenticated view."""
    details = {
        "subscribers": str(status.subscribers),
        "webhook": status.webhook,
        "redis": status.redis,
    }
    if status.redis_error:
        details["redis_error"] = status.redis_error
        if detail and status.redis_error_detail:
            details["redis_error_detail"] = status.redis_error_detail
    failing = status.webhook == "failing" or status.redis == "disconnected"
    return Component("feedback", "degraded" if failing else "healthy", details)


def lifecycle_component(shutting_down: bool) -> Component:
    if shutting_down:
        return Component("lifecycle", "unhealthy", {"phase": "shutting_down"})
    return Component("lifecycle", "healthy", {"phase": "running"})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


Probe = Literal["liveness", "readiness"]
_encoder = msgspec.json.Encoder()
_TS_PLACEHOLDER = b'"ts":0.0,'


@dataclass
class _Rendered:
    key: object
    head: bytes  # the JSON up to and including '"ts":'
    tail: bytes  # the JSON after the ts value
    ok: bool


@dataclass
class HealthSources:
    """Everything a probe reads, bundled so a probe resolves one dependency.

    A report is rendered to JSON only when what it says changes (database
    status, queue figures, circuit, feedback channels, shutdown); in between, a probe
    splices the current time into the cached bytes. Probes stay a few
    microseconds whatever the load.
    """

    db_monitor: DatabaseMonitor
    coordinator: WriteCoordinator[Any]
    feedback: FeedbackChannels
    lifecycle: Lifecycle
    workers: int
    _rendered: dict[Probe, _Rendered] = field(default_factory=dict, init=False, repr=False)

    def _key(self) -> tuple[Any, ...]:
        c = self.coordinator
        queue = c.queue
        return (
            self.db_monitor.status,
            CoordinatorFigures(
                queue.size, queue.capacity, queue.level, c.breaker.state, c.workers_alive
            ),
            self.feedback.status(),
            self.lifecycle.shutting_down,
        )

    def components(
        self, key: tuple[Any, ...] | None = None, *, detail: bool = False
    ) -> list[Component]:
        status, coordinator, feedback, shutting_down = key or self._key()
        return [
            database_component(status, detail=detail),
            coordinator_component(coordinator, self.workers),
            feedback_component(feedback, detail=detail),
            lifecycle_component(shutting_down),
        ]

    def liveness(self, key: tuple[Any, ...] | None = None) -> HealthReport:
        """Alive whatever the dependencies say: degraded, never a failure, when they fail."""
        components = self.components(key)
        return _report(components, _overall(components), ok=True)

    def readiness(
        self, key: tuple[Any, ...] | None = None, *, detail: bool = False
    ) -> HealthReport:
        """Ready when the database is reachable, the breaker closed and we are not
        stopping. Half-open is not ready: writes are not known to work until the
        trial write succeeded (which closes the breaker). ``detail``: the errors' own
        words too (the authenticated view)."""
        components = self.components(key, detail=detail)
        database, coordinator, _, lifecycle = components
        ready = (
            database.state != "unhealthy"
            and lifecycle.state != "unhealthy"
            and coordinator.details["circuit_state"] == "closed"
        )
        return _report(components, _overall(components) if ready else "unhealthy", ok=ready)

    def render(self, probe: Probe) -> tuple[bytes, bool]:
        """The probe's JSON body (a ``HealthReport``) and whether it is ok."""
        key = self._key()
        cached = self._rendered.get(probe)
        if cached is None or cached.key != key:
            report = self.liveness(key) if probe == "liveness" else self.readiness(key)
            report.ts = 0.0
            body = _encoder.encode(report)
            cut = body.index(_TS_PLACEHOLDER) + len(b'"ts":')
            cached = _Rendered(key, body[:cut], body[cut + 3 :], report.ok)
            self._rendered[probe] = cached
        return cached.head + repr(time.time()).encode() + cached.tail, cached.ok


def _overall(components: list[Component]) -> State:
    return "healthy" if all(c.state == "healthy" for c in components) else "degraded"


def _report(components: list[Component], state: State, *, ok: bool) -> HealthReport:
    return HealthReport(SERVICE, state, components, __version__, time.time(), ok)
