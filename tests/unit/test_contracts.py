"""Core contracts (``market_data_store.contracts``): what we emit must validate as
market-data-core's models, and our publishers conform to Core's FeedbackPublisher."""

from __future__ import annotations

import inspect
import time
import typing

import pytest
from market_data_core.telemetry import BackpressureLevel as CoreLevel
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent
from market_data_core.telemetry import HealthComponent as CoreHealthComponent
from market_data_core.telemetry import HealthStatus as CoreHealthStatus

from market_data_store import contracts
from market_data_store.contracts import FeedbackPublisher
from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from tests.support.feedback import Recorder


def test_feedback_event_schema_roundtrip() -> None:
    ours = FeedbackEvent.create("bars", 850, 1000, BackpressureLevel.soft, reason="filling")
    core = CoreFeedbackEvent.model_validate_json(ours.model_dump_json())
    assert core.coordinator_id == "bars"
    assert (core.queue_size, core.capacity) == (850, 1000)
    assert core.level is CoreLevel.soft
    assert core.source == "store"
    assert core.ts == ours.ts
    back = FeedbackEvent.model_validate_json(ours.model_dump_json())
    assert back == ours
    assert back.reason == "filling"
    assert back.utilization == pytest.approx(0.85)


def test_feedback_event_is_a_frozen_core_subclass() -> None:
    ours = FeedbackEvent.create("c", 1, 2, BackpressureLevel.ok)
    assert isinstance(ours, CoreFeedbackEvent)
    assert ours.reason is None
    assert abs(ours.ts - time.time()) < 5
    with pytest.raises(ValueError, match="frozen"):
        ours.queue_size = 5  # type: ignore[misc]


def test_feedback_event_keeps_core_validation() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FeedbackEvent.create("c", 1, 0, BackpressureLevel.ok)


def test_backpressure_level_values() -> None:
    assert BackpressureLevel is CoreLevel
    assert [level.value for level in BackpressureLevel] == ["ok", "soft", "hard"]


def test_health_status_schema() -> None:
    status = contracts.HealthStatus(
        service="market-data-store",
        state="degraded",
        components=[
            contracts.HealthComponent(name="database", state="unhealthy", details={"error": "x"}),
            contracts.HealthComponent(name="coordinator", state="healthy"),
        ],
        version="0.4.0",
        ts=time.time(),
    )
    core = CoreHealthStatus.model_validate_json(status.model_dump_json())
    assert core == status
    assert core.components[0].details == {"error": "x"}


def test_health_component_state_enum() -> None:
    assert set(typing.get_args(contracts.HealthState)) == {"healthy", "degraded", "unhealthy"}
    with pytest.raises(ValueError, match="state"):
        CoreHealthComponent(name="db", state="broken")


def test_contracts_module_reexports_core_models() -> None:
    assert contracts.FeedbackEvent is CoreFeedbackEvent
    assert contracts.HealthStatus is CoreHealthStatus
    assert contracts.HealthComponent is CoreHealthComponent
    assert contracts.Bar.__module__.startswith("market_data_core")


# -- publishers ------------------------------------------------------------------


def test_feedback_bus_conforms_to_protocol() -> None:
    bus = FeedbackBus()
    assert isinstance(bus, FeedbackPublisher)
    assert inspect.iscoroutinefunction(bus.publish)


async def test_feedback_bus_publish_accepts_feedback_event(recorder: Recorder) -> None:
    bus = FeedbackBus()
    bus.subscribe(recorder)
    publisher: FeedbackPublisher = bus
    event = FeedbackEvent.create("c", 1, 10, BackpressureLevel.ok)
    await publisher.publish(event)
    assert recorder.events == [event]
