"""RetryPolicy and the default retry classifier."""

from __future__ import annotations

from market_data_store.coordinator import RetryPolicy, default_retry_classifier


def test_default_retry_classifier() -> None:
    assert default_retry_classifier(TimeoutError("socket timeout"))
    assert default_retry_classifier(TimeoutError())
    assert default_retry_classifier(ConnectionResetError("reset by peer"))
    assert default_retry_classifier(Exception("Temporary failure"))
    assert default_retry_classifier(Exception("Database busy, please retry"))
    assert not default_retry_classifier(Exception("permission denied"))
    assert not default_retry_classifier(ValueError("invalid argument"))
    assert not default_retry_classifier(ValueError("bad connection string"))


def test_backoff_curve_monotonic_with_cap() -> None:
    rp = RetryPolicy(
        max_attempts=10,
        initial_backoff_ms=50,
        max_backoff_ms=200,
        backoff_multiplier=2.0,
        jitter=False,
    )
    vals = [rp.next_backoff_ms(i) for i in range(1, 10)]
    assert vals[:4] == [50, 100, 200, 200]
    assert vals == sorted(vals)
    assert all(v <= 200 for v in vals)


def test_backoff_stops_growing_after_max_attempts() -> None:
    rp = RetryPolicy(max_attempts=3, initial_backoff_ms=10, max_backoff_ms=10_000, jitter=False)
    assert [rp.next_backoff_ms(i) for i in (1, 2, 3, 4, 50)] == [10, 20, 40, 40, 40]


def test_backoff_with_jitter_is_50_to_100_percent() -> None:
    rp = RetryPolicy(initial_backoff_ms=100, max_backoff_ms=1000, jitter=True)
    vals = [rp.next_backoff_ms(1) for _ in range(200)]
    assert all(50 <= v <= 100 for v in vals)
    assert len(set(vals)) > 5  # actually random


def test_custom_classifier() -> None:
    rp = RetryPolicy(classify_retryable=lambda exc: True)
    assert rp.classify_retryable(ValueError("anything"))
