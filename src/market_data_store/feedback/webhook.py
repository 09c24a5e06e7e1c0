"""Webhook delivery: every feedback event POSTed as JSON to one URL.

Retries with exponential backoff and jitter, from a bounded outbox of its own:
a slow or dead endpoint never blocks the feedback bus, the coordinator or the
shutdown (``stop`` waits at most ``timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import httpx

from market_data_store._util import ThrottledLog, backoff_delay
from market_data_store.coordinator import FeedbackBus, FeedbackEvent, feedback_bus

from .outbox import DeliveryStats, Outbox
from .wire import encode_event

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024

FINAL_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}
"""Client errors other than timeout / too early / too many requests: not retried."""

HEADERS = {"content-type": "application/json", "user-agent": "market-data-store-feedback"}

DEFAULT_MAX_ATTEMPTS = 3


class HttpFeedbackBroadcaster:
    """POSTs each event of ``bus`` (default: the process bus) to ``endpoint``.

    The body is Core's FeedbackEvent JSON plus ``reason`` and ``utilization``.
    An event is tried up to ``max_attempts`` times in all (default 3; any 2xx is
    success; a 4xx other than 408, 425 and 429 ends the attempts at once),
    waiting ``backoff_base * 2**(n-1)`` s, randomised to 50-100 %, after the
    n-th failure (``backoff_delay``); then it is given up and counted as failed.

    ``max_retries`` is the original library's name for ``max_attempts`` (it counts
    attempts, the first one included): either may be given, not both.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 2.5,
        max_attempts: int | None = None,
        max_retries: int | None = None,
        backoff_base: float = 0.5,
        enabled: bool = True,
        bus: FeedbackBus | None = None,
        queue_size: int = 1000,
    ) -> None:
        if max_attempts is not None and max_retries is not None:
            raise TypeError(
                "give max_attempts or max_retries (the original library's name for it), not both"
            )
        if max_attempts is not None:
            name, attempts = "max_attempts", max_attempts
        else:
            name = "max_retries"
            attempts = DEFAULT_MAX_ATTEMPTS if max_retries is None else max_retries
        if attempts < 1:
            raise ValueError(f"{name} must be >= 1")
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_attempts = attempts
        self.backoff_base = backoff_base
        self.enabled = enabled
        self.stats = DeliveryStats()
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._bus = bus
        self._client: httpx.AsyncClient | None = None
        self._outbox = Outbox[FeedbackEvent]("webhook", queue_size, self.broadcast_one, self.stats)
        self._started = False
        self._failures = ThrottledLog(log)

    @property
    def max_retries(self) -> int:
        """``max_attempts``, by the original library's name."""
        return self.max_attempts

    @max_retries.setter
    def max_retries(self, attempts: int) -> None:
        self.max_attempts = attempts

    @property
    def started(self) -> bool:
        return self._started

    @property
    def failing(self) -> bool:
        """The last delivery was given up (until one succeeds)."""
        return self.last_error is not None

    @property
    def buffered(self) -> int:
        return self._outbox.size

    async def start(self) -> None:
        """Subscribe to the bus and start delivering (no-op when disabled or started)."""
        if not self.enabled or self._started:
            return
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._outbox.start()
        (self._bus or feedback_bus()).subscribe(self._on_feedback)
        self._started = True

    async def stop(self) -> None:
        """Unsubscribe, deliver what is buffered for at most ``timeout`` s, close."""
        if not self._started:
            return
        (self._bus or feedback_bus()).unsubscribe(self._on_feedback)
        await self._outbox.stop(self.timeout)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._started = False

    async def _on_feedback(self, event: FeedbackEvent) -> None:
        """Bus subscriber: buffer and return at once."""
        self._outbox.put_nowait(event)

    async def broadcast_one(self, event: FeedbackEvent) -> bool:
        """Deliver ``event`` now, with retries; True once a 2xx answered."""
        client = self._client
        if client is None:
            return False
        body = encode_event(event)
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.stats.retried += 1
            try:
                async with (
                    asyncio.timeout(self.timeout),  # the whole attempt, not per phase
                    client.stream("POST", self.endpoint, content=body, headers=HEADERS) as response,
                ):
                    # the status is all we need; a small body is read (the connection is
                    # then reused), a large one is not: past the limit we hang up
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_RESPONSE_BYTES:
                            break
            except Exception as exc:  # not only httpx.HTTPError: a bad URL raises InvalidURL,
                # a port > 65535 an ExceptionGroup; either must count as a failed attempt
                # (retried, then ``failing``), not escape and leave health at "ok"
                error = type(exc).__name__
            else:
                if response.is_success:
                    self.last_error = None
                    self.last_success = time.time()
                    return True
                error = f"HTTP {response.status_code}"
                if response.status_code in FINAL_STATUSES:
                    break  # the receiver refuses this request: sending it again changes nothing
            if attempt < self.max_attempts:
                await asyncio.sleep(
                    backoff_delay(attempt, initial=self.backoff_base, maximum=math.inf, jitter=True)
                )
        self.last_error = error
        self._failures.log(
            logging.WARNING,
            "gave-up",
            "webhook: event of %s not delivered after %d attempt(s) (%s)",
            event.coordinator_id,
            self.max_attempts,
            error,
        )
        return False
