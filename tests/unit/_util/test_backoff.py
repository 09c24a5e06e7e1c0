"""backoff_delay: the one retry schedule (exponential, capped, optionally jittered)."""

from __future__ import annotations

import random
import sys

import pytest

from market_data_store._util import backoff_delay


def test_the_schedule_grows_by_the_multiplier_from_the_initial_delay() -> None:
    delays = [backoff_delay(n, initial=0.1, maximum=100) for n in range(1, 6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    tripled = [backoff_delay(n, initial=1, maximum=100, multiplier=3) for n in range(1, 5)]
    assert tripled == pytest.approx([1, 3, 9, 27])


@pytest.mark.parametrize("attempt", [-1, 0, 1])
def test_the_first_retry_and_anything_below_waits_the_initial_delay(attempt: int) -> None:
    assert backoff_delay(attempt, initial=0.25, maximum=10) == 0.25


def test_a_multiplier_of_one_keeps_the_delay_constant() -> None:
    assert {backoff_delay(n, initial=0.5, maximum=10, multiplier=1) for n in range(1, 50)} == {0.5}


def test_the_delay_is_capped_at_the_maximum() -> None:
    delays = [backoff_delay(n, initial=1, maximum=5) for n in range(1, 8)]
    assert delays == [1, 2, 4, 5, 5, 5, 5]
    assert backoff_delay(1, initial=10, maximum=5) == 5  # even the first one


@pytest.mark.parametrize("attempt", [1_100, 10**6, sys.maxsize])
def test_a_huge_attempt_number_waits_the_maximum_without_overflowing(attempt: int) -> None:
    assert backoff_delay(attempt, initial=0.1, maximum=30) == 30
    assert backoff_delay(attempt, initial=0.1, maximum=30, multiplier=1.5) == 30
    assert 15 <= backoff_delay(attempt, initial=0.1, maximum=30, jitter=True) <= 30


def test_jitter_is_50_to_100_percent_of_the_delay() -> None:
    for attempt, base in ((1, 0.2), (3, 0.8), (20, 5.0)):  # the last one capped
        delays = [backoff_delay(attempt, initial=0.2, maximum=5, jitter=True) for _ in range(2000)]
        assert all(0.5 * base <= d <= base for d in delays), (attempt, min(delays), max(delays))
        # spread over the whole range, not stuck at one end
        assert min(delays) < 0.55 * base
        assert max(delays) > 0.95 * base


def test_jitter_draws_from_50_to_100_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        drawn.append((a, b))
        return a

    monkeypatch.setattr(random, "uniform", uniform)
    assert backoff_delay(3, initial=1, maximum=10, jitter=True) == 2.0  # half of 4
    assert backoff_delay(3, initial=1, maximum=10) == 4.0  # no jitter: no draw
    assert drawn == [(0.5, 1.0)]
