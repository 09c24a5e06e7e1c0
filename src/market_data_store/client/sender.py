"""The client's senders: batches out of the accumulator to ``POST /v1/bars``.

Each of ``max_in_flight`` tasks takes a batch, waits for the throttle, sends it as
MessagePack and reads the answer: accepted, split (413), retried (503/429 after
``Retry-After``, cut to ``max_hold``; 408/5xx/transport errors after the backoff)
until the batch's deadline, or rejected. A batch given up goes to ``Failures``
with its bars.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec

from market_data_store._util import backoff_delay

from .accumulator import BarAccumulator, Batch, Failures
from .credit import CreditWindow
from .errors import (
    BarsDeadLetteredError,
    BarsRejectedError,
    BatchFailedError,
    DeadlineExceededError,
)
from .http1 import Http1Pool
from .options import ClientStats
from .throttle import LevelBoard, Throttle
from .wire import (
    BAD_JSON,
    MSGPACK,
    Feedback,
    IngestAnswer,
    WireBar,
    as_dicts,
    decode_answer,
    decode_feedback,
    decode_problem,
    encode_body,
    encode_records,
    retry_after,
)

log = logging.getLogger(__name__)

BARS_PATH = "/v1/bars"
MAX_ANSWER_BYTES = 1024 * 1024
"""Most of an answer read (the store's are a few hundred bytes; a proxy's page is cut)."""
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "not now": the batch is sent again (writes are idempotent)."""


def sound_indices(indices: list[int] | None, lost: int, sent: int) -> bool:
    """Whether a 201's ``dead_lettered_indices`` can be about ``sent`` items of which
    ``lost`` rows were refused: distinct, each an item, at least one per row (a key
    sent twice is one row, and its refusal names every item of the key)."""
    return (
        indices is not None
        and len(set(indices)) == len(indices) >= lost
        and all(0 <= i < sent for i in indices)
    )


class _NotTheStore(Exception):
    """A 2xx whose body is not the store's ingest answer."""


class _OutOfTime(Exception):
    pass


class Sender:
    """``max_in_flight`` tasks sending the accumulator's batches until it is closed and empty.

    What the answers say goes to the ``throttle`` (queue sizes, refusals) and to
    ``observe`` (the levels of coordinators named in answers and 503s); each request
    waits until the throttle lets it start, woken early by ``wake``.
    """

    def __init__(
        self,
        accumulator: BarAccumulator,
        http: httpx.AsyncClient,
        throttle: Throttle,
        board: LevelBoard,
        *,
        stats: ClientStats,
        failures: Failures,
        observe: Callable[[Feedback], None],
        provider: str,
        max_in_flight: int,
        request_timeout: float,
        deadline: float,
        initial_backoff: float,
        max_backoff: float,
        wait_commit: bool,
        headers: Mapping[str, str],
        window: CreditWindow | None = None,
        lean: Http1Pool | None = None,
    ) -> None:
        self._accumulator = accumulator
        self._http = http
        self._lean = lean  # the POSTs go through it when given (http1.lean_pool)
        self._throttle = throttle
        self._board = board
        self._stats = stats
        self._failures = failures
        self._observe = observe
        self.provider = provider
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.deadline = deadline
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.wait_commit = wait_commit
        self._headers = {"content-type": MSGPACK, "accept": "application/json", **headers}
        self.window = window if window is not None else CreditWindow()
        self._credit: int | None = None  # the latest credit an answer carried
        self._changed = asyncio.Event()  # replaced after each set: wakes paced senders
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the sending tasks (once)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"store-client-sender-{i}")
                for i in range(self.max_in_flight)
            ]

    async def stop(self, timeout: float | None) -> None:
        """Wait for the tasks to send what is left (the accumulator must be closing);
        after ``timeout`` s cancel them (their batches fail as not confirmed) and fail
        what was never taken."""
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        leftover = await self._accumulator.drain()
        if leftover:
            self._failures.add(
                DeadlineExceededError(
                    f"the client was closed with {len(leftover)} bar(s) not sent",
                    as_dicts(leftover),
                    attempts=0,
                    last_error=None,
                )
            )

    def wake(self) -> None:
        """The throttle changed: requests waiting for it look again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        while True:
            batch = await self._accumulator.take()
            if batch is None:
                return
            try:
                await self._deliver(batch)
            except BatchFailedError as exc:
                self._failures.add(exc)
            except asyncio.CancelledError:
                self._failures.add(
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
                self._failures.add(
                    DeadlineExceededError(
                        f"sending failed unexpectedly: {exc!r}",
                        as_dicts(batch.bars),
                        attempts=batch.attempts,
                        last_error=repr(exc),
                    )
                )
            finally:
                await self._accumulator.finished(batch)

    async def _deliver(self, batch: Batch) -> None:
        """Send ``batch`` until stored; halves of a batch refused as too large are sent
        one after the other. Raises ``BatchFailedError``."""
        self._stats.batches_sent += 1
        self._stats.bars_sent += len(batch.bars)
        parts = [batch.bars]
        failed: list[BatchFailedError] = []
        window = self.window
        while parts:
            bars = parts.pop()
            n = await window.take(len(bars))
            if n < len(bars):  # more than the store's credit: the rest goes next
                parts.append(bars[n:])
                bars = bars[:n]
            answered = False
            try:
                halves = await self._send(bars, batch)
                answered = True
            except BatchFailedError as error:  # the other parts still go out
                failed.append(error)
                continue
            finally:
                window.give_back(n, self._credit, answered=answered)
            if halves:
                parts.extend(reversed(halves))
        if failed:
            for earlier in failed[:-1]:
                self._failures.add(earlier)
            raise failed[-1]

    async def _send(self, bars: list[WireBar], batch: Batch) -> list[list[WireBar]] | None:
        """One part until it is accepted (None) or must be split (its halves)."""
        split = await self._attempts(
            BARS_PATH,
            encode_body(self.provider, bars),
            len(bars),
            batch,
            lambda: as_dicts(bars),
            lambda answer: self._delivered(bars, answer),
        )
        if split:
            half = len(bars) // 2
            return [bars[:half], bars[half:]]
        return None

    async def send_records(self, path: str, records: list[dict[str, Any]], size: int) -> int:
        """Records of another kind than bars (plain dicts: ``POST path``, ``size`` per
        request, one request at a time, paced and retried as bars are, until
        ``deadline`` s from now): the count committed (with ``wait_commit=False``:
        queued). Raises ``BatchFailedError`` (its ``bars``: every record of the call not
        known to be stored, those of the parts not sent yet included) at the first part
        that fails; a ``BarsDeadLetteredError``'s ``indices`` are those records'
        positions in ``records``."""
        started = time.monotonic()
        parts = [(i, records[i : i + size]) for i in range(0, len(records), size)]
        stored = 0
        while parts:
            offset, part = parts.pop(0)
            batch = Batch(0, [], started + self.deadline)
            answered: list[IngestAnswer] = []
            try:
                split = await self._attempts(
                    path,
                    encode_records(self.provider, path.rsplit("/", 1)[1], part),
                    len(part),
                    batch,
                    lambda part=part: part,  # type: ignore[misc]
                    answered.append,
                )
                if split:
                    half = len(part) // 2
                    parts[:0] = [(offset, part[:half]), (offset + half, part[half:])]
                    continue
                stored += self._records_stored(part, answered[-1])
            except BatchFailedError as failed:
                failed.bars = failed.bars + [r for _, later in parts for r in later]
                if isinstance(failed, BarsDeadLetteredError) and failed.indices is not None:
                    failed.indices = [offset + i for i in failed.indices] + [
                        start + j for start, later in parts for j in range(len(later))
                    ]
                raise
        return stored

    def _records_stored(self, part: list[dict[str, Any]], answer: IngestAnswer) -> int:
        """Records an answer took; ``BarsDeadLetteredError`` for those the database refused."""
        self._stats.bars_accepted += answer.accepted
        if answer.committed is None and answer.dead_lettered is None:
            return answer.accepted  # 202: queued
        lost = min(answer.dead_lettered or 0, len(part))
        if lost:
            indices = answer.dead_lettered_indices
            if not sound_indices(indices, lost, len(part)):
                indices = None
            chosen = part if indices is None else [part[i] for i in indices]
            raise BarsDeadLetteredError(chosen, indices)
        return answer.committed or 0

    async def _attempts(
        self,
        path: str,
        body: bytes,
        count: int,
        batch: Batch,
        items: Callable[[], list[dict[str, Any]]],
        delivered: Callable[[IngestAnswer], None],
    ) -> bool:
        """``body`` (of ``count`` items) sent to ``path`` until accepted (False;
        ``delivered`` told the answer) or refused as too large with more than one item
        in it (True: split it). Raises ``BatchFailedError`` (with ``items()``, built only
        then: turning a part back into dicts costs more than encoding it)."""
        count = max(1, count)
        attempt = 0
        while True:
            try:
                await self._pace(count, batch.deadline)
            except _OutOfTime:
                raise self._out_of_time(items(), batch, "throttled by the store") from None
            remaining = batch.deadline - time.monotonic()
            if remaining <= 0:
                raise self._out_of_time(items(), batch, "retries ran out of time")
            attempt += 1
            batch.attempts += 1
            self._stats.requests += 1
            if attempt > 1:
                self._stats.retries += 1
            hold: float | None = None
            budget = min(self.request_timeout, remaining)
            params = {"wait": "commit"} if self.wait_commit else None
            try:
                status, headers, content = await self._post(path, body, params, budget)
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
                        answer = self._answered(status, content)
                    except _NotTheStore:
                        raise BarsRejectedError(
                            status,
                            {"detail": "a success answer that is not the store's (check base_url)"},
                            items(),
                        ) from None
                    if not (self.wait_commit and status == 202):
                        delivered(answer)
                        return False
                    # ?wait=commit outlived the store's commit_timeout (``pending``): the
                    # rows are queued there, not known to be committed; send them again
                    self._stats.commits_pending += 1
                    batch.last_error = "HTTP 202: the commit outlived the store's commit_timeout"
                else:
                    problem = decode_problem(status, content)
                    if status == 413 and count > 1:
                        self._stats.splits += 1
                        return True
                    if status not in RETRIED_STATUSES:
                        raise BarsRejectedError(status, problem, items())
                    batch.last_error = f"HTTP {status}: {problem.get('detail', '')}".rstrip(": ")
                    if status in (503, 429):
                        hold = self._refused(headers.get("retry-after"), problem) or None
            if hold is None:
                delay = backoff_delay(
                    attempt, initial=self.initial_backoff, maximum=self.max_backoff, jitter=True
                )
                if time.monotonic() + delay >= batch.deadline:
                    raise self._out_of_time(items(), batch, "retries ran out of time")
                await asyncio.sleep(delay)
            else:
                await self._hold(hold, batch.deadline)

    async def _post(
        self, path: str, body: bytes, params: dict[str, str] | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        if self._lean is not None:
            return await self._lean.post(path, body, params, self._headers, budget)
        async with (
            asyncio.timeout(budget),  # the whole attempt, not per phase
            self._http.stream(
                "POST", path, content=body, params=params, headers=self._headers
            ) as response,
        ):
            content = b""
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_ANSWER_BYTES:
                    break
            return response.status_code, response.headers, content

    async def _hold(self, hold: float, deadline: float) -> None:
        """Wait out a 503's Retry-After (``hold``, already cut to the throttle's
        ``max_hold``), randomised to 100-110 % within that cap; one longer than the
        deadline leaves is waited until the deadline: the batch then fails as every
        batch does, at its deadline (not at once: the bars stay in the buffer, so
        the producer is held back too, as the store asked)."""
        began = time.monotonic()
        delay = min(hold * random.uniform(1.0, 1.1), self._throttle.max_hold)
        await asyncio.sleep(max(0.0, min(delay, deadline - began)))
        self._stats.throttled_seconds += time.monotonic() - began

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

    def _out_of_time(
        self, items: list[dict[str, Any]], batch: Batch, why: str
    ) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"{len(items)} row(s) not stored within {self.deadline:g}s ({why}; last error: "
            f"{batch.last_error or 'none'})",
            items,
            attempts=batch.attempts,
            last_error=batch.last_error,
        )

    def _answered(self, status: int, content: bytes) -> IngestAnswer:
        answer = decode_answer(content)
        if answer is None:
            # not the store's answer (a proxy's 200 page, a wrong base_url): nothing says
            # the bars were taken
            raise _NotTheStore(status)
        if answer.credit is not None:
            self._credit = answer.credit
            self.window.capacity = answer.capacity if answer.capacity > 0 else None
            self._throttle.use_credit()
        self._throttle.answered(answer.queue_size)
        if answer.coordinator_id:
            self._observe(_answer_feedback(answer))
        return answer

    def _delivered(self, bars: list[WireBar], answer: IngestAnswer) -> None:
        """A 202 (queued) or 201 (committed): count it; hand back what was dead-lettered."""
        stats = self._stats
        stats.bars_accepted += answer.accepted
        if answer.committed is None and answer.dead_lettered is None:
            return  # 202: queued
        stats.bars_committed += answer.committed or 0
        lost = min(answer.dead_lettered or 0, len(bars))
        if not lost:
            return
        stats.bars_dead_lettered += lost
        indices = answer.dead_lettered_indices
        if not sound_indices(indices, lost, len(bars)):
            indices = None  # not an answer about these bars: hand them all back
        chosen = bars if indices is None else [bars[i] for i in indices]
        self._failures.add(BarsDeadLetteredError(as_dicts(chosen), indices))

    def _refused(self, header: str | None, problem: dict[str, Any]) -> float | None:
        """A 503/429: hold every request for its Retry-After; the seconds, if said."""
        self._stats.refused += 1
        seconds = retry_after(header, problem, most=self._throttle.max_hold)
        feedback = problem.get("feedback")
        if isinstance(feedback, dict):
            with contextlib.suppress(*BAD_JSON, TypeError):
                event = decode_feedback(msgspec.json.encode(feedback), "refusal")
                self._throttle.answered(event.queue_size)
                if event.credit is not None:
                    self._credit = event.credit
                self._observe(event)
        self._throttle.refused(seconds)
        self.wake()
        return seconds


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
