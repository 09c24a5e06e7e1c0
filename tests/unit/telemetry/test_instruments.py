"""Coordinator instruments, read through a real OpenTelemetry SDK reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from market_data_store.coordinator import (
    CircuitBreaker,
    FeedbackBus,
    WriteCoordinator,
)
from market_data_store.telemetry import CoordinatorInstruments
from tests.unit.coordinator.sinks import PoisonSink, RecordingSink


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    r = InMemoryMetricReader()
    p = MeterProvider(metric_readers=[r])
    yield p, r
    p.shutdown()


@pytest.fixture
def reader(provider: tuple[MeterProvider, InMemoryMetricReader]) -> InMemoryMetricReader:
    return provider[1]


@pytest.fixture
def instruments(provider: tuple[MeterProvider, InMemoryMetricReader]) -> CoordinatorInstruments:
    return CoordinatorInstruments(provider[0].get_meter("test"))


def collect(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = out.setdefault(metric.name, [])
                for p in metric.data.data_points:
                    value = p.value if isinstance(p, NumberDataPoint) else (p.count, p.sum)
                    points.append((dict(p.attributes or {}), value))
    return out


def value(metrics: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **attrs: str) -> Any:
    for point_attrs, v in metrics[name]:
        if all(point_attrs.get(k) == a for k, a in attrs.items()):
            return v
    raise AssertionError(f"no {name} point with {attrs}: {metrics[name]}")


EXPECTED_NAMES = {
    "mds.coordinator.items.submitted",
    "mds.coordinator.items.dropped",
    "mds.coordinator.items.dead_lettered",
    "mds.coordinator.queue.depth",
    "mds.coordinator.queue.capacity",
    "mds.coordinator.workers.alive",
    "mds.coordinator.circuit.state",
    "mds.coordinator.backpressure.level",
    "mds.coordinator.batches.written",
    "mds.coordinator.write.errors",
    "mds.coordinator.write.duration",
}


async def test_instruments_report_live_coordinator_state(
    reader: InMemoryMetricReader, instruments: CoordinatorInstruments
) -> None:
    sink = PoisonSink(poison={5})
    coord = WriteCoordinator[int](
        sink=sink, capacity=100, high_watermark=10, low_watermark=5, workers=2,
        batch_size=10, coord_id="bars", bus=FeedbackBus(),
    )  # fmt: skip
    instruments.track(coord)
    instruments.track(coord)  # idempotent
    await coord.submit_many(list(range(20)))  # not started yet: queued, level hard
    m = collect(reader)
    assert value(m, "mds.coordinator.queue.depth", coordinator_id="bars") == 20
    assert value(m, "mds.coordinator.queue.capacity", coordinator_id="bars") == 100
    assert value(m, "mds.coordinator.backpressure.level", coordinator_id="bars") == 2
    assert value(m, "mds.coordinator.workers.alive", coordinator_id="bars") == 0
    assert value(m, "mds.coordinator.items.submitted", coordinator_id="bars") == 20

    await coord.start()
    await coord.wait_idle()
    m = collect(reader)
    assert set(m) >= EXPECTED_NAMES
    assert value(m, "mds.coordinator.workers.alive", coordinator_id="bars") == 2
    assert value(m, "mds.coordinator.queue.depth") == 0
    assert value(m, "mds.coordinator.backpressure.level") == 0
    assert value(m, "mds.coordinator.items.dead_lettered") == 1
    assert value(m, "mds.coordinator.write.errors", error_type="ValueError") >= 1
    assert value(m, "mds.coordinator.items.dropped", reason="overflow") == 0
    batches = value(m, "mds.coordinator.batches.written")
    assert batches >= 2
    count, total = value(m, "mds.coordinator.write.duration", coordinator_id="bars")
    assert count == batches
    assert total >= 0
    await coord.stop()

    instruments.untrack(coord)
    assert coord.stats.write_listeners == []


async def test_circuit_state_gauge(
    reader: InMemoryMetricReader, instruments: CoordinatorInstruments
) -> None:
    cb = CircuitBreaker(failure_threshold=1)
    coord = WriteCoordinator[int](sink=RecordingSink(), circuit_breaker=cb, bus=FeedbackBus())
    instruments.track(coord)
    await cb.on_failure()
    assert value(collect(reader), "mds.coordinator.circuit.state") == 1


def test_names_carry_no_unit_or_total_suffix() -> None:
    for name in EXPECTED_NAMES:
        assert not name.endswith(("_total", ".total", "_seconds", ".seconds")), name
        assert name.startswith("mds.coordinator.")
