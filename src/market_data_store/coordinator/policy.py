"""Retry policy (exponential backoff with jitter) and circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from market_data_store._util import backoff_delay

CircuitState = Literal["closed", "open", "half_open"]

_TRANSIENT_WORDS = (
    "timeout",
    "timed out",
    "temporar",
    "busy",
    "retry",
    "unavailable",
    "connection",
    "deadlock",
    "serializ",
    "too many",
)


def default_retry_classifier(exc: BaseException) -> bool:
    """Is ``exc`` worth retrying? Timeouts, lost connections, 'try again' messages.

    Sinks with precise error types (the PostgreSQL sink) pass their own classifier.
    """
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, ValueError | TypeError | KeyError | AttributeError | PermissionError):
        return False
    text = str(exc).lower()
    return any(word in text for word in _TRANSIENT_WORDS)


@dataclass
class RetryPolicy:
    """Backoff schedule for retryable write failures.

    ``next_backoff_ms(n)`` = ``initial * multiplier**(n-1)``, capped at ``max``;
    with ``jitter`` a random 50-100 % of that, so workers do not retry in lockstep.
    Workers retry a retryable failure at this schedule for ``max_attempts``
    attempts and then keep retrying at the capped delay (gated by the circuit
    breaker): an outage delays accepted items, it never discards them.
    """

    max_attempts: int = 5
    initial_backoff_ms: int = 50
    max_backoff_ms: int = 2_000
    backoff_multiplier: float = 2.0
    jitter: bool = True
    classify_retryable: Callable[[BaseException], bool] = field(default=default_retry_classifier)

    def next_backoff_ms(self, attempt: int) -> int:
        """Delay before retry number ``attempt`` (1-based)."""
        return int(
            backoff_delay(
                min(attempt, max(self.max_attempts, 1)),
                initial=self.initial_backoff_ms,
                maximum=self.max_backoff_ms,
                multiplier=self.backoff_multiplier,
                jitter=self.jitter,
            )
        )


class CircuitOpenError(RuntimeError):
    """The breaker is open: the sink is failing, calls are not attempted."""


class CircuitBreaker:
    """Stops hammering a failing sink.

    ``closed`` → ``open`` after ``failure_threshold`` consecutive failures;
    ``open`` → ``half_open`` once ``half_open_after_sec`` have passed, or at once
    when ``half_open_now`` says the sink answers again (the database monitor);
    ``half_open`` lets one trial call through (another only if the trial has not
    reported within ``half_open_after_sec``) → ``closed`` on a success, back to
    ``open`` on a failure. Callers wait with ``wait_allowed``.
    """

    def __init__(self, *, failure_threshold: int = 5, half_open_after_sec: float = 60.0) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self._threshold = failure_threshold
        self._half_open_after = half_open_after_sec
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None  # when the half-open trial was let through
        self._waiting = 0  # callers in wait_allowed: they have a call to make
        self._changed = asyncio.Event()  # set (and replaced) at every state change

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._half_open_after - time.monotonic())

    async def allow(self) -> None:
        """Raise ``CircuitOpenError`` unless a call may proceed now."""
        if self._state == "open":
            if self.retry_after > 0:
                raise CircuitOpenError(f"circuit open, retry in {self.retry_after:.2f}s")
            self._set_state("half_open")
        if self._state == "half_open":
            now = time.monotonic()
            if self._trial_at is not None and now - self._trial_at < self._half_open_after:
                raise CircuitOpenError("circuit half-open, a trial call is in progress")
            self._trial_at = now

    async def wait_allowed(self, not_before: float | None = None) -> None:
        """Wait until ``allow`` lets a call through, and not before the monotonic time
        ``not_before`` (a retry backoff). Wakes as soon as the breaker changes state:
        a ``half_open_now`` or the end of a trial lets waiters in without delay."""
        self._waiting += 1
        try:
            if not_before is not None:
                delay = not_before - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while True:
                try:
                    await self.allow()
                except CircuitOpenError:
                    pass
                else:
                    return
                changed = self._changed
                if self._state == "open":
                    timeout = self.retry_after
                else:  # half-open with a trial out: until it reports, or its time is up
                    assert self._trial_at is not None
                    timeout = self._trial_at + self._half_open_after - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(timeout, 0.001)):
                        await changed.wait()
        finally:
            self._waiting -= 1

    def half_open_now(self) -> bool:
        """The sink is known to answer again (e.g. a health check succeeded): an open
        breaker goes half-open at once instead of when its timer runs out, and lets
        one trial call through. With no caller waiting there is nothing to try, and
        it closes. Does nothing unless open; returns whether the state changed."""
        if self._state != "open":
            return False
        if self._waiting:
            self._set_state("half_open")
        else:
            self._failures = 0
            self._set_state("closed")
        return True

    async def on_success(self) -> None:
        self._failures = 0
        self._set_state("closed")

    async def on_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            self._opened_at = time.monotonic()
            self._set_state("open")

    def _set_state(self, state: CircuitState) -> None:
        self._trial_at = None
        if state != self._state or state == "open":  # (re)opened: waiters recompute
            self._state = state
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
