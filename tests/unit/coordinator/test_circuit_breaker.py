"""CircuitBreaker state machine."""

from __future__ import annotations

import asyncio

import pytest

from market_data_store.coordinator import CircuitBreaker, CircuitOpenError


async def test_circuit_breaker_states() -> None:
    cb = CircuitBreaker(failure_threshold=3, half_open_after_sec=0.05)
    assert cb.state == "closed"
    await cb.allow()

    await cb.on_failure()
    await cb.on_failure()
    assert cb.state == "closed"
    await cb.on_failure()
    assert cb.state == "open"
    assert 0 < cb.retry_after <= 0.05

    with pytest.raises(CircuitOpenError):
        await cb.allow()

    await asyncio.sleep(0.06)
    assert cb.retry_after == 0
    await cb.allow()
    assert cb.state == "half_open"
    await cb.on_success()
    assert cb.state == "closed"


async def test_failure_in_half_open_reopens_at_once() -> None:
    cb = CircuitBreaker(failure_threshold=5, half_open_after_sec=0.01)
    for _ in range(5):
        await cb.on_failure()
    await asyncio.sleep(0.02)
    await cb.allow()
    assert cb.state == "half_open"
    await cb.on_failure()
    assert cb.state == "open"


async def test_success_resets_the_failure_count() -> None:
    cb = CircuitBreaker(failure_threshold=2)
    await cb.on_failure()
    await cb.on_success()
    await cb.on_failure()
    assert cb.state == "closed"
    assert cb.retry_after == 0


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
