"""CircuitBreaker state machine."""

from __future__ import annotations

import asyncio
import time

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


async def opened(cb: CircuitBreaker) -> CircuitBreaker:
    for _ in range(cb._threshold):
        await cb.on_failure()
    assert cb.state == "open"
    return cb


async def test_half_open_now_lets_a_waiting_caller_through_at_once() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=2, half_open_after_sec=3600))
    waiter = asyncio.create_task(cb.wait_allowed())
    await asyncio.sleep(0)  # the waiter is waiting
    assert not waiter.done()
    assert cb.half_open_now() is True
    await asyncio.wait_for(waiter, 5)  # long before the hour the timer would take
    assert cb.state == "half_open"
    await cb.on_success()
    assert cb.state == "closed"


async def test_half_open_lets_one_trial_through_and_its_success_releases_the_others() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=1, half_open_after_sec=3600))
    waiters = [asyncio.create_task(cb.wait_allowed()) for _ in range(3)]
    await asyncio.sleep(0)
    cb.half_open_now()
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.01)  # give the others every chance to slip through
    assert len(done) == 1
    assert all(not w.done() for w in pending)  # one trial at a time
    with pytest.raises(CircuitOpenError, match="trial"):
        await cb.allow()
    await cb.on_success()
    await asyncio.wait_for(asyncio.gather(*pending), 5)
    assert cb.state == "closed"


async def test_a_failed_trial_opens_again_for_the_full_time() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=1, half_open_after_sec=3600))
    waiter = asyncio.create_task(cb.wait_allowed())
    await asyncio.sleep(0)
    cb.half_open_now()
    await asyncio.wait_for(waiter, 5)
    await cb.on_failure()
    assert cb.state == "open"
    assert cb.retry_after > 3000


async def test_half_open_now_closes_when_nothing_waits_to_be_tried() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=3, half_open_after_sec=3600))
    assert cb.half_open_now() is True
    assert cb.state == "closed"
    await cb.on_failure()
    await cb.on_failure()
    assert cb.state == "closed"  # the failure count started over


async def test_a_caller_in_its_backoff_counts_as_waiting() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=1, half_open_after_sec=3600))
    backing_off = asyncio.create_task(cb.wait_allowed(not_before=time.monotonic() + 0.05))
    await asyncio.sleep(0)
    cb.half_open_now()
    assert cb.state == "half_open"  # not closed: that caller has a write to try
    await asyncio.wait_for(backing_off, 5)
    assert cb.state == "half_open"


async def test_half_open_now_does_nothing_unless_open() -> None:
    cb = CircuitBreaker(failure_threshold=1, half_open_after_sec=3600)
    assert cb.half_open_now() is False
    assert cb.state == "closed"
    await cb.on_failure()
    waiter = asyncio.create_task(cb.wait_allowed())
    await asyncio.sleep(0)
    cb.half_open_now()
    await asyncio.wait_for(waiter, 5)
    assert cb.half_open_now() is False  # half-open already: the trial is out
    assert cb.state == "half_open"


async def test_a_trial_that_never_reports_is_replaced_after_the_timer() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=1, half_open_after_sec=0.05))
    await asyncio.sleep(0.06)
    await cb.allow()  # the trial, which then never reports
    with pytest.raises(CircuitOpenError):
        await cb.allow()
    await asyncio.wait_for(cb.wait_allowed(), 5)  # a second trial once its time is up
    assert cb.state == "half_open"


async def test_waiters_wake_when_the_timer_runs_out() -> None:
    cb = await opened(CircuitBreaker(failure_threshold=1, half_open_after_sec=0.05))
    await asyncio.wait_for(cb.wait_allowed(), 5)
    assert cb.state == "half_open"
