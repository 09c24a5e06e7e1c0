"""``StoreClient``: batches bars, sends them as MessagePack, retries, follows feedback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypedDict

import httpx
import msgspec

from market_data_store._util import ThrottledLog
from market_data_store.contracts import Bar

from .errors import (
    BarsRejectedError,
    BatchFailedError,
    ClientClosedError,
    DeadlineExceededError,
)
from .stream import FeedbackFollower
from .throttle import LevelBoard, Throttle
from .wire import (
    MSGPACK,
    Feedback,
    IngestAnswer,
    Level,
    WireBar,
    as_dicts,
    decode_answer,
    decode_feedback,
    decode_problem,
    encode_body,
    retry_after,
    to_wire,
)

log = logging.getLogger(__name__)

BARS_PATH = "/v1/bars"
MAX_ANSWER_BYTES = 1024 * 1024
"""Most of an answer read (the store's are a few hundred bytes; a proxy's page is cut)."""


class _NotTheStore(Exception):
    """A 2xx whose body is not the store's ingest answer."""


RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "not now": the batch is sent again (writes are idempotent)."""
MAX_UNREPORTED = 1000
"""Failed batches kept for ``write``/``flush``/``take_failures``; beyond, only counted."""

BarLike = Bar | Mapping[str, Any]


@dataclass(slots=True)
class ClientStats:
    """Counters of one client (plain integers; a copy is handed out)."""

    bars_written: int = 0  # taken by write()
    bars_sent: int = 0  # in batches that went out (each bar counted once)
    bars_accepted: int = 0  # the store answered 202/201 for them (its count)
    bars_committed: int = 0  # wait_commit: 201 said written
    bars_dead_lettered: int = 0  # wait_commit: 201 said dead-lettered by the database
    bars_failed: int = 0  # in batches given up (BatchFailedError)
    batches_sent: int = 0
    batches_failed: int = 0
    requests: int = 0  # every attempt
    retries: int = 0  # attempts after the first of a batch
    refused: int = 0  # 503 (and 429) answers
    transport_errors: int = 0  # connection errors and timeouts
    splits: int = 0  # 413 answers that split a batch in two
    throttled_seconds: float = 0.0  # requests held back (rate, pause, Retry-After), summed
    write_wait_seconds: float = 0.0  # write() waiting for buffer room, summed
    feedback_events: int = 0  # stream events received
    stream_connects: int = 0
    unreported_discarded: int = 0  # failures beyond MAX_UNREPORTED (still counted above)


class ClientOptions(TypedDict, total=False):
    """``StoreClient``'s keyword options (also taken by ``SyncStoreClient``)."""

    batch_size: int
    max_buffered: int | None
    max_in_flight: int
    linger: float
    request_timeout: float
    deadline: float
    initial_backoff: float
    max_backoff: float
    wait_commit: bool
    follow_feedback: bool
    min_rate: float
    max_rate: float | None
    decrease_factor: float
    increase_fraction: float
    adjust_interval: float
    probe_interval: float
    stream_idle_timeout: float
    on_feedback: Callable[[Feedback], None] | None
    headers: Mapping[str, str] | None
    transport: httpx.AsyncBaseTransport | None


@dataclass(eq=False)
class _Batch:
    seq: int
    bars: list[WireBar]
    deadline: float  # monotonic
    attempts: int = 0
    last_error: str | None = None


class _OutOfTime(Exception):
    pass


class StoreClient:
    """Writes bars to a market-data-store, as fast as the store can take them.

    ``await write(bars)`` buffers (Core ``Bar`` models or mappings of their fields);
    full batches of ``batch_size`` go out as MessagePack ``POST /v1/bars``, at most
    ``max_in_flight`` at a time; a partial batch goes after ``linger`` s, or at
    ``flush()``/``aclose()``. The buffer holds at most ``max_buffered`` bars (default
    ``batch_size x (max_in_flight + 1)``, counting those in flight): ``write`` waits
    for room, so a producer faster than the store is slowed down to its pace.

    **Retries.** A 503 (queue full, shutting down), 429, 408, 5xx, a connection
    error or a timeout (``request_timeout`` per attempt) sends the batch again
    (safe: the store's writes are idempotent per bar key): after the 503's
    ``Retry-After`` (randomised to 100-110 %, and no request of this client starts
    earlier), else after ``initial_backoff x 2^(n-1)`` s capped at ``max_backoff``,
    randomised to 50-100 %; until ``deadline`` s after the batch was formed, when it
    fails with ``DeadlineExceededError``. A 413 splits the batch in halves (a single
    bar still too large is rejected). Any other 4xx fails it at once with
    ``BarsRejectedError`` (never retried). Failed batches are raised, oldest first,
    by the next ``write``/``flush``/``aclose`` (each with its bars, to write again
    or keep); ``take_failures()`` hands them all over.

    **Rate (AIMD, see ``Throttle``).** Unlimited at first. Congestion cuts it, once
    per ``adjust_interval`` s, not below ``min_rate``: the level rising to ``hard``
    or a 503 to ``decrease_factor`` x the rate (the limit, or the rate actually
    sent if under half of it), rising to ``soft`` to sqrt(``decrease_factor``) x; ``soft``
    cuts again while the store's queue keeps growing; ``hard`` pauses every new
    request until the store says ``ok``; ``ok`` grows it every ``adjust_interval``
    s: half the way back to the pre-cut rate, then beyond it by
    ``increase_fraction`` x that rate, the step doubling each time, up to
    ``max_rate``.

    **Feedback.** With ``follow_feedback`` a background task follows
    ``/v1/feedback/stream`` (reconnecting with ``Last-Event-ID``). The client's
    coordinators are those named by the store's answers (``coordinator_id``);
    until one is known, every coordinator of the stream counts. The stream is
    authoritative while connected; without it (unavailable, disabled, between
    reconnects) the levels in the answers and 503s drive the rate, and while
    ``hard`` one probe request starts every ``probe_interval`` s. Writes never
    wait on the stream. ``on_feedback`` (plain callable, must not block) gets every
    stream event of the followed coordinators and every level change an answer
    reveals.

    Concurrency reorders batches: two versions of one bar key written in
    different batches may be stored in either order unless ``max_in_flight=1``.
    Use from one event loop; ``SyncStoreClient`` wraps it for threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        provider: str,
        batch_size: int = 5_000,
        max_buffered: int | None = None,
        max_in_flight: int = 4,
        linger: float = 1.0,
        request_timeout: float = 30.0,
        deadline: float = 300.0,
        initial_backoff: float = 0.25,
        max_backoff: float = 10.0,
        wait_commit: bool = False,
        follow_feedback: bool = True,
        min_rate: float = 100.0,
        max_rate: float | None = None,
        decrease_factor: float = 0.5,
        increase_fraction: float = 0.1,
        adjust_interval: float = 1.0,
        probe_interval: float = 5.0,
        stream_idle_timeout: float = 45.0,
        on_feedback: Callable[[Feedback], None] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if not provider.strip():
            raise ValueError("provider must not be blank")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        buffered = batch_size * (max_in_flight + 1) if max_buffered is None else max_buffered
        if buffered < batch_size:
            raise ValueError("max_buffered must be >= batch_size")
        for name, value in (
            ("linger", linger),
            ("request_timeout", request_timeout),
            ("deadline", deadline),
            ("initial_backoff", initial_backoff),
            ("stream_idle_timeout", stream_idle_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0")
        if max_backoff < initial_backoff:
            raise ValueError("max_backoff must be >= initial_backoff")
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.batch_size = batch_size
        self.max_buffered = buffered
        self.max_in_flight = max_in_flight
        self.linger = linger
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.wait_commit = wait_commit
        self.follow_feedback = follow_feedback
        self.stream_idle_timeout = stream_idle_timeout
        self.on_feedback = on_feedback
        self._headers = {"content-type": MSGPACK, "accept": "application/json", **(headers or {})}
        self._transport = transport
        self._throttle = Throttle(
            min_rate=min_rate,
            max_rate=max_rate,
            decrease_factor=decrease_factor,
            increase_fraction=increase_fraction,
            interval=adjust_interval,
            probe_interval=probe_interval,
        )
        self._board = LevelBoard()
        self._stats = ClientStats()
        self._failures: deque[BatchFailedError] = deque()
        self._failed_log = ThrottledLog(log)
        # buffer: pending (partial batch) + ready (sealed) + in flight, all counted in _held
        self._pending: list[WireBar] = []
        self._pending_since = 0.0
        self._ready: deque[_Batch] = deque()
        self._open: set[int] = set()  # sealed batches not finished
        self._next_seq = 0
        self._held = 0
        self._cond = asyncio.Condition()
        self._changed = asyncio.Event()  # replaced after each set: wakes paced senders
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._senders: list[asyncio.Task[None]] = []
        self._follower: FeedbackFollower | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """A copy of the counters (``stream_connects`` / ``feedback_events`` included)."""
        stats = replace(self._stats)
        if self._follower is not None:
            stats.stream_connects = self._follower.connects
            stats.feedback_events = self._follower.events
        return stats

    @property
    def level(self) -> Level:
        """The backpressure level the client acts on (``ok`` until told otherwise)."""
        return self._throttle.level

    @property
    def rate(self) -> float | None:
        """The current limit in bars/s (None: unlimited)."""
        return self._throttle.rate

    @property
    def send_rate(self) -> float:
        """Bars/s whose requests started over the last 2 s."""
        return self._throttle.send_rate()

    @property
    def paused(self) -> bool:
        """No new request may start now (``hard``, or a 503's ``Retry-After``)."""
        return self._throttle.paused

    @property
    def stream_connected(self) -> bool:
        return self._board.stream_live

    @property
    def coordinators(self) -> frozenset[str]:
        """Coordinator ids learned from the store's answers."""
        return frozenset(self._board.ours)

    @property
    def buffered(self) -> int:
        """Bars written and not finished yet (pending, ready or in flight)."""
        return self._held

    async def start(self) -> None:
        """Open the connection pool, start the senders and the feedback follower.
        ``write`` calls it when needed; idempotent."""
        if self._closing:
            raise ClientClosedError("the client is closed")
        if self._started:
            return
        self._started = True
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=self._transport,
            timeout=self.request_timeout,
            limits=httpx.Limits(
                max_connections=self.max_in_flight + 1,
                max_keepalive_connections=self.max_in_flight + 1,
            ),
            follow_redirects=False,
        )
        self._senders = [
            asyncio.create_task(self._sender(), name=f"store-client-sender-{i}")
            for i in range(self.max_in_flight)
        ]
        self._tasks = [asyncio.create_task(self._adjust(), name="store-client-adjust")]
        if self.follow_feedback:
            self._follower = FeedbackFollower(
                self._http,
                on_event=self._on_stream_event,
                on_reset=self._on_stream_reset,
                on_live=self._on_stream_live,
                connect_timeout=min(self.request_timeout, 10.0),
                idle_timeout=self.stream_idle_timeout,
            )
            self._tasks.append(asyncio.create_task(self._follower.run(), name="store-client-feed"))

    async def write(self, bars: Iterable[BarLike], *, timeout: float | None = None) -> None:
        """Buffer ``bars``; returns once they are buffered (not sent).

        Waits while the buffer is full: room comes back as batches finish, each
        within its ``deadline``, so the wait is bounded even without ``timeout``
        (``TimeoutError`` after it; only whole ``max_buffered`` pieces of the call
        may have been buffered then). First raises the oldest unreported
        ``BatchFailedError``, and ``InvalidBarError`` for a bar that cannot be sent:
        nothing of the call is buffered in either case.
        """
        self._raise_failure()
        if self._closing:
            raise ClientClosedError("the client is closed")
        wire = [to_wire(bar, i) for i, bar in enumerate(bars)]
        if not wire:
            return
        await self.start()
        async with asyncio.timeout(timeout):
            for first in range(0, len(wire), self.max_buffered):
                await self._buffer(wire[first : first + self.max_buffered])

    async def flush(self, timeout: float | None = None) -> None:
        """Send the partial batch and wait until every bar written before the call is
        accepted by the store (queued there; committed, with ``wait_commit=True``) or
        failed; then raise the oldest unreported ``BatchFailedError``.
        ``TimeoutError`` after ``timeout`` s (the batches keep going)."""
        if self._started:
            async with self._cond:
                self._seal()
                last = self._next_seq - 1
                self._cond.notify_all()
                async with asyncio.timeout(timeout):
                    await self._cond.wait_for(lambda: not any(s <= last for s in self._open))
        self._raise_failure()

    async def aclose(self, timeout: float | None = None) -> None:
        """Send everything buffered, then stop (idempotent). After ``timeout`` s the
        rest is abandoned and reported as ``DeadlineExceededError``. Raises the oldest
        unreported failure; ``take_failures()`` has the others."""
        await self._close(timeout)
        self._raise_failure()

    def take_failures(self) -> list[BatchFailedError]:
        """Every failure not raised yet (oldest first); they will not be raised."""
        failures = list(self._failures)
        self._failures.clear()
        return failures

    async def __aenter__(self) -> StoreClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close(None)
        if exc_type is None:
            self._raise_failure()  # with an exception on the way out, do not mask it

    # -- buffering ----------------------------------------------------------------------

    async def _buffer(self, bars: list[WireBar]) -> None:
        count = len(bars)
        async with self._cond:
            if self._held + count > self.max_buffered and not self._closing:
                began = time.monotonic()
                try:
                    await self._cond.wait_for(
                        lambda: self._held + count <= self.max_buffered or self._closing
                    )
                finally:
                    self._stats.write_wait_seconds += time.monotonic() - began
            if self._closing:
                raise ClientClosedError("the client was closed while write waited for room")
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(bars)
            self._held += count
            self._stats.bars_written += count
            while len(self._pending) >= self.batch_size:
                self._seal(self.batch_size)
            self._cond.notify_all()

    def _seal(self, size: int | None = None) -> None:
        """Turn the first ``size`` pending bars (all by default) into a ready batch."""
        if not self._pending:
            return
        size = size or len(self._pending)
        bars, self._pending = self._pending[:size], self._pending[size:]
        seq = self._next_seq
        self._next_seq += 1
        self._open.add(seq)
        self._ready.append(_Batch(seq, bars, time.monotonic() + self.deadline))

    async def _take(self) -> _Batch | None:
        """The next batch to send; None once closing and nothing is left."""
        async with self._cond:
            while True:
                if self._ready:
                    return self._ready.popleft()
                wait: float | None = None
                if self._pending:
                    wait = self._pending_since + self.linger - time.monotonic()
                    if self._closing or wait <= 0:
                        self._seal()
                        continue
                elif self._closing:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._cond.wait()

    # -- sending --------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            batch = await self._take()
            if batch is None:
                return
            try:
                await self._deliver(batch)
            except BatchFailedError as exc:
                self._failed(exc)
            except asyncio.CancelledError:
                self._failed(
                    DeadlineExceededError(
                        f"the client was closed before the store confirmed {len(batch.bars)} "
                        "bar(s)",
                        as_dicts(batch.bars),
                        attempts=batch.attempts,
                        last_error=batch.last_error,
                    )
                )
                raise
            except Exception as exc:  # a bug: the bars are still handed back, never lost
                log.exception("store client: sending a batch failed unexpectedly")
                self._failed(
                    DeadlineExceededError(
                        f"sending failed unexpectedly: {exc!r}",
                        as_dicts(batch.bars),
                        attempts=batch.attempts,
                        last_error=repr(exc),
                    )
                )
            finally:
                await self._finished(batch)

    async def _finished(self, batch: _Batch) -> None:
        async with self._cond:
            self._held -= len(batch.bars)
            self._open.discard(batch.seq)
            self._cond.notify_all()

    async def _deliver(self, batch: _Batch) -> None:
        """Send ``batch`` until stored; halves of a batch refused as too large are sent
        one after the other. Raises ``BatchFailedError``."""
        self._stats.batches_sent += 1
        self._stats.bars_sent += len(batch.bars)
        parts = [batch.bars]
        failed: list[BatchFailedError] = []
        while parts:
            bars = parts.pop()
            try:
                halves = await self._send(bars, batch)
            except BatchFailedError as error:  # the other parts still go out
                failed.append(error)
                continue
            if halves:
                parts.extend(reversed(halves))
        if failed:
            for earlier in failed[:-1]:
                self._failed(earlier)
            raise failed[-1]

    async def _send(self, bars: list[WireBar], batch: _Batch) -> list[list[WireBar]] | None:
        """One part until it is accepted (None) or must be split (its halves)."""
        body = encode_body(self.provider, bars)
        params = {"wait": "commit"} if self.wait_commit else None
        attempt = 0
        while True:
            try:
                await self._pace(len(bars), batch.deadline)
            except _OutOfTime:
                raise self._out_of_time(bars, batch, "throttled by the store") from None
            remaining = batch.deadline - time.monotonic()
            if remaining <= 0:
                raise self._out_of_time(bars, batch, "retries ran out of time")
            attempt += 1
            batch.attempts += 1
            self._stats.requests += 1
            if attempt > 1:
                self._stats.retries += 1
            hold: float | None = None
            budget = min(self.request_timeout, remaining)
            try:
                status, headers, content = await self._post(body, params, budget)
            except (httpx.RequestError, TimeoutError, OSError) as exc:
                self._stats.transport_errors += 1
                batch.last_error = (
                    f"{type(exc).__name__}: {exc}"
                    if str(exc)
                    else f"{type(exc).__name__}: no answer within {budget:.3g}s"
                )
            else:
                if status in (201, 202):
                    try:
                        self._answered(status, content, len(bars))
                    except _NotTheStore:
                        raise BarsRejectedError(
                            status,
                            {"detail": "a success answer that is not the store's (check base_url)"},
                            as_dicts(bars),
                        ) from None
                    return None
                problem = decode_problem(status, content)
                if status == 413 and len(bars) > 1:
                    self._stats.splits += 1
                    half = len(bars) // 2
                    return [bars[:half], bars[half:]]
                if status not in RETRIED_STATUSES:
                    raise BarsRejectedError(status, problem, as_dicts(bars))
                batch.last_error = f"HTTP {status}: {problem.get('detail', '')}".rstrip(": ")
                if status in (503, 429):
                    hold = self._refused(headers.get("retry-after"), problem) or None
            delay = (
                hold * random.uniform(1.0, 1.1)
                if hold is not None
                else min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
                * random.uniform(0.5, 1.0)
            )
            if time.monotonic() + delay >= batch.deadline:
                raise self._out_of_time(bars, batch, "retries ran out of time")
            await asyncio.sleep(delay)
            if hold is not None:
                self._stats.throttled_seconds += delay

    async def _post(
        self, body: bytes, params: dict[str, str] | None, budget: float
    ) -> tuple[int, httpx.Headers, bytes]:
        assert self._http is not None
        async with (
            asyncio.timeout(budget),  # the whole attempt, not per phase
            self._http.stream(
                "POST", BARS_PATH, content=body, params=params, headers=self._headers
            ) as response,
        ):
            content = b""
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_ANSWER_BYTES:
                    break
            return response.status_code, response.headers, content

    async def _pace(self, count: int, deadline: float) -> None:
        """Wait until the throttle lets a request of ``count`` bars start."""
        waited = 0.0
        try:
            while True:
                may_probe = not self._board.ours_on_stream()
                delay = self._throttle.delay(count, may_probe=may_probe)
                if delay <= 0:
                    return
                now = time.monotonic()
                if now >= deadline:
                    raise _OutOfTime
                changed = self._changed
                began = now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, deadline - now)):
                        await changed.wait()
                waited += time.monotonic() - began
        finally:
            self._stats.throttled_seconds += waited

    def _out_of_time(self, bars: list[WireBar], batch: _Batch, why: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"{len(bars)} bar(s) not stored within {self.deadline:g}s ({why}; last error: "
            f"{batch.last_error or 'none'})",
            as_dicts(bars),
            attempts=batch.attempts,
            last_error=batch.last_error,
        )

    def _answered(self, status: int, content: bytes, count: int) -> None:
        answer = decode_answer(content)
        stats = self._stats
        if answer is None:
            # not the store's answer (a proxy's 200 page, a wrong base_url): nothing says
            # the bars were taken
            raise _NotTheStore(status)
        stats.bars_accepted += answer.accepted
        if status == 201:
            stats.bars_committed += answer.committed or 0
            stats.bars_dead_lettered += answer.dead_lettered or 0
        self._throttle.answered(answer.queue_size)
        if answer.coordinator_id:
            self._observe(_answer_feedback(answer), learn=True)

    def _refused(self, header: str | None, problem: dict[str, Any]) -> float | None:
        """A 503/429: hold every request for its Retry-After; the seconds, if said."""
        self._stats.refused += 1
        seconds = retry_after(header, problem)
        feedback = problem.get("feedback")
        if isinstance(feedback, dict):
            with contextlib.suppress(msgspec.DecodeError, TypeError):
                event = decode_feedback(msgspec.json.encode(feedback), "refusal")
                self._throttle.answered(event.queue_size)
                self._observe(event, learn=True)
        self._throttle.refused(seconds)
        self._wake()
        return seconds

    def _failed(self, error: BatchFailedError) -> None:
        self._stats.batches_failed += 1
        self._stats.bars_failed += len(error.bars)
        self._failed_log.log(logging.WARNING, type(error).__name__, "store client: %s", error)
        if len(self._failures) >= MAX_UNREPORTED:
            self._stats.unreported_discarded += 1
            return
        self._failures.append(error)

    def _raise_failure(self) -> None:
        if self._failures:
            raise self._failures.popleft()

    # -- feedback --------------------------------------------------------------------------

    def _observe(self, event: Feedback, *, learn: bool) -> None:
        """A level from an answer or a 503."""
        board = self._board
        learned = learn and board.learn(event.coordinator_id)
        changed = board.from_answer(event.coordinator_id, event.level)
        if changed or learned:
            self._apply_level()
        if changed and board.followed(event.coordinator_id):
            self._notify(event)

    def _on_stream_event(self, event: Feedback) -> None:
        self._board.from_stream(event)
        self._apply_level()
        if self._board.followed(event.coordinator_id):
            self._notify(event)

    def _on_stream_reset(self) -> None:
        self._board.reset_stream()
        self._apply_level()

    def _on_stream_live(self, live: bool) -> None:
        self._board.stream_live = live
        self._wake()  # a paused sender may probe now (or must not any more)

    def _apply_level(self) -> None:
        old = self._throttle.level
        if self._throttle.set_level(self._board.level()):
            rate = self._throttle.rate
            log.info(
                "store client: level %s -> %s; rate limit %s",
                old,
                self._throttle.level,
                "none" if rate is None else f"{rate:,.0f} bars/s",
            )
            self._wake()

    def _notify(self, event: Feedback) -> None:
        if self.on_feedback is None:
            return
        try:
            self.on_feedback(event)
        except Exception:
            self._failed_log.log(logging.ERROR, "on_feedback", "on_feedback raised", exc=True)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _adjust(self) -> None:
        interval = self._throttle.interval
        while True:
            await asyncio.sleep(interval / 2)
            try:
                if self._throttle.tick():
                    self._wake()
            except Exception:
                self._failed_log.log(logging.ERROR, "adjust", "rate adjustment failed", exc=True)

    # -- closing ---------------------------------------------------------------------------

    async def _close(self, timeout: float | None) -> None:
        """Every caller waits for the one close (a second ``aclose`` does not return
        before the first has flushed)."""
        if self._close_task is None:
            self._closed = True
            self._close_task = asyncio.create_task(self._shut(timeout), name="store-close")
        await asyncio.shield(self._close_task)

    async def _shut(self, timeout: float | None) -> None:
        async with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not self._started:
            return
        try:
            if self._senders:
                _done, pending = await asyncio.wait(self._senders, timeout=timeout)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            async with self._cond:
                leftover = [b for batch in self._ready for b in batch.bars] + self._pending
                self._ready.clear()
                self._pending = []
                self._open.clear()
                self._held = 0
                self._cond.notify_all()
            if leftover:
                self._failed(
                    DeadlineExceededError(
                        f"the client was closed with {len(leftover)} bar(s) not sent",
                        as_dicts(leftover),
                        attempts=0,
                        last_error=None,
                    )
                )
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._http is not None:
                await self._http.aclose()


def _answer_feedback(answer: IngestAnswer) -> Feedback:
    assert answer.coordinator_id is not None
    capacity = answer.capacity
    return Feedback(
        coordinator_id=answer.coordinator_id,
        level=answer.level,
        queue_size=answer.queue_size,
        capacity=capacity,
        utilization=answer.queue_size / capacity if capacity > 0 else 0.0,
        via="answer",
    )
