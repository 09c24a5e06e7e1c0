"""Probe bodies: rendered once per change, current time spliced in, Core-valid."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
from market_data_core.telemetry import HealthStatus

from market_data_store.coordinator import FeedbackBus, WriteCoordinator
from market_data_store.feedback import FeedbackChannels, FeedbackFanout
from market_data_store.service import HealthSources, Lifecycle
from market_data_store.storage import DatabaseMonitor, DatabaseStatus
from tests.unit.coordinator.sinks import RecordingSink


class FixedMonitor(DatabaseMonitor):
    def __init__(self, status: DatabaseStatus) -> None:
        self.status = status


def sources() -> tuple[HealthSources, WriteCoordinator[int], FixedMonitor]:
    monitor = FixedMonitor(DatabaseStatus(True, time.time(), 1.5))
    coordinator = WriteCoordinator[int](sink=RecordingSink(), capacity=10, bus=FeedbackBus())
    channels = FeedbackChannels(FeedbackFanout())
    return HealthSources(monitor, coordinator, channels, Lifecycle(), 4), coordinator, monitor


def details(body: bytes, name: str) -> dict[str, str]:
    status = HealthStatus.model_validate_json(body)
    (component,) = [c for c in status.components if c.name == name]
    return {"state": component.state, **component.details}


async def test_render_follows_state_changes_and_stamps_current_time() -> None:
    health, coordinator, monitor = sources()
    first, ok = health.render("liveness")
    assert ok
    assert details(first, "coordinator")["queue_size"] == "0"
    await coordinator.submit_many([1, 2, 3, 4, 5, 6])
    second, _ = health.render("liveness")
    assert details(second, "coordinator")["queue_size"] == "6"
    assert details(second, "coordinator")["level"] == "soft"
    assert json.loads(second)["ts"] >= json.loads(first)["ts"]
    await asyncio.sleep(0.002)
    third, _ = health.render("liveness")
    assert json.loads(third)["ts"] > json.loads(second)["ts"]  # fresh time, cached rest

    monitor.status = DatabaseStatus(False, time.time(), error="boom")
    body, ok = health.render("readiness")
    assert not ok
    assert json.loads(body)["state"] == "unhealthy"
    assert details(body, "database")["error"] == "boom"
    live, live_ok = health.render("liveness")
    assert live_ok
    assert json.loads(live)["state"] == "degraded"


def test_rendered_body_equals_the_report_it_caches() -> None:
    health, _, _ = sources()
    body, _ = health.render("readiness")
    expected = msgspec.to_builtins(health.readiness())
    assert {**json.loads(body), "ts": 0} == {**expected, "ts": 0}
