"""``StoreClient``: batches bars, sends them as MessagePack, retries, follows feedback.

The facade wires the buffer (``accumulator.py``), the senders (``sender.py``) and the
feedback stream (``stream.py``), and turns the levels they report into the throttle's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from market_data_store._util import ThrottledLog
from market_data_store.contracts import Bar

from .accumulator import BarAccumulator, Failures
from .credit import CreditWindow
from .errors import BatchFailedError, ClientClosedError
from .http1 import Http1Pool, lean_pool
from .options import ClientOptions as ClientOptions  # where 0.4.0 defined it
from .options import ClientStats
from .reads import BarQuery, BarReader, symbol_list
from .sender import MAX_ANSWER_BYTES, Sender
from .stream import FeedbackFollower
from .throttle import MAX_HOLD, LevelBoard, Throttle
from .wire import RECORD_KINDS, Feedback, Level, to_records, to_wire_all

log = logging.getLogger(__name__)

BarLike = Bar | Mapping[str, Any]
PRODUCER_HEADER = "x-mds-producer"


class StoreClient:
    """Writes bars to a market-data-store, as fast as the store can take them.

    ``await write(bars)`` buffers (Core ``Bar`` models or mappings of their fields);
    full batches of ``batch_size`` go out as MessagePack ``POST /v1/bars``, at most
    ``max_in_flight`` requests at a time; a partial batch goes after ``linger`` s, or
    at ``flush()``/``aclose()``. The buffer holds at most ``max_buffered`` bars
    (default ``batch_size x (max_in_flight + 1)``, counting those in flight): ``write``
    waits for room, so a producer faster than the store is slowed down to its pace.

    **Delivered means committed** (``wait_commit=True``, the default): a bar counts
    as delivered only when the store answered 201, i.e. it is in PostgreSQL; a bar
    the database refused comes back as ``BarsDeadLetteredError`` (exactly those
    bars); a 202 ``pending`` (the commit outlived the store's ``commit_timeout``) is
    sent again. Kill the store at any moment: every bar not handed back as failed
    is stored. With ``wait_commit=False`` a 202 (queued in the store's memory)
    counts: faster by a few percent, but a crash of the store loses what it queued.

    **Credit.** Each answer says how many bars this client (``x-mds-producer``, a
    random id unless ``headers`` name one) may have sent and not yet had answered;
    batches larger than that go in parts (see ``CreditWindow``). The store sizes the
    credit to keep its queue short but never empty, and shares it evenly among its
    producers: with commits as the clock, the client follows the store's drain rate.

    **Retries.** A 503 (queue full, shutting down), 429, 408, 5xx, a connection
    error or a timeout (``request_timeout`` per attempt) sends the batch again
    (safe: the store's writes are idempotent per bar key): after the 503's
    ``Retry-After`` cut to ``max_hold`` s (randomised to 100-110 % within it, and
    no request of this client starts earlier), else after ``initial_backoff x
    2^(n-1)`` s capped at ``max_backoff``, randomised to 50-100 %; until
    ``deadline`` s after the batch was formed, when it fails with
    ``DeadlineExceededError`` (a ``Retry-After`` longer than the deadline leaves is
    waited until the deadline). A 413 splits the batch in halves (a single bar
    still too large is rejected). Any other 4xx fails it at once with
    ``BarsRejectedError`` (never retried). Failed batches are raised, oldest first,
    by the next ``write``/``flush``/``aclose`` (each with its bars, to write again
    or keep); ``take_failures()`` hands them all over. A number the store sends
    out of any sane range (negative, huge, not a number) is clamped or ignored
    with a warning: never a traceback, never a failed batch.

    **Rate (AIMD, see ``Throttle``), for a store that sends no credit.** Unlimited
    at first. Congestion cuts it, once per ``adjust_interval`` s, not below
    ``min_rate``: the level rising to ``hard`` or a 503 to ``decrease_factor`` x the
    rate, rising to ``soft`` to sqrt(``decrease_factor``) x; ``ok`` grows it back up
    to ``max_rate``. With credits no rate is cut; in both modes ``hard`` pauses
    every new request until the store says ``ok``, and a 503's ``Retry-After`` holds
    them.

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

    **Tenants.** ``token``: the tenant's bearer token, for a store with tenants
    (``auth.tenants``); the bars are that tenant's. A 401 fails a batch at once.

    **Reads.** ``read_bars`` streams a range as Core ``Bar``s (an NDJSON export, in
    bounded memory, resumed from the last bar received when it breaks or the store
    refuses it for now); ``latest`` is the newest bar of each symbol. Neither starts
    the senders or the feedback stream (``reads.py``).

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
        max_in_flight: int = 16,
        linger: float = 1.0,
        request_timeout: float = 30.0,
        deadline: float = 300.0,
        initial_backoff: float = 0.25,
        max_backoff: float = 10.0,
        wait_commit: bool = True,
        follow_feedback: bool = True,
        min_rate: float = 100.0,
        max_rate: float | None = None,
        decrease_factor: float = 0.5,
        increase_fraction: float = 0.1,
        adjust_interval: float = 1.0,
        probe_interval: float = 5.0,
        max_hold: float = MAX_HOLD,
        stream_idle_timeout: float = 45.0,
        on_feedback: Callable[[Feedback], None] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
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
            ("max_hold", max_hold),
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
        self._headers = dict(headers or {})
        if token is not None:
            if not token.strip() or not (token.isascii() and token.isprintable()):
                raise ValueError("token must be printable ASCII, not blank")
            # the tenant's bearer token (a store with tenants answers 401 without it)
            self._headers["authorization"] = f"Bearer {token.strip()}"
        if not any(k.lower() == PRODUCER_HEADER for k in self._headers):
            # who we are to the store: its credit is shared among the producers it sees
            self._headers[PRODUCER_HEADER] = uuid.uuid4().hex
        self._window = CreditWindow()
        self._transport = transport
        self._throttle = Throttle(
            min_rate=min_rate,
            max_rate=max_rate,
            decrease_factor=decrease_factor,
            increase_fraction=increase_fraction,
            interval=adjust_interval,
            probe_interval=probe_interval,
            max_hold=max_hold,
        )
        self._board = LevelBoard()
        self._stats = ClientStats()
        self._failures = Failures(self._stats)
        self._log = ThrottledLog(log)
        self._accumulator = BarAccumulator(
            batch_size=batch_size,
            max_buffered=buffered,
            linger=linger,
            deadline=deadline,
            stats=self._stats,
        )
        self._http: httpx.AsyncClient | None = None
        self._lean: Http1Pool | None = None
        self._sender: Sender | None = None
        self._reader: BarReader | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._follower: FeedbackFollower | None = None
        self._started = False
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
    def credit(self) -> int | None:
        """Bars the store lets this client have out at once, as its latest answer said
        (None: not said yet, or a store without credit)."""
        return self._window.credit

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
        return self._accumulator.held

    async def start(self) -> None:
        """Open the connection pool, start the senders and the feedback follower.
        ``write`` calls it when needed; idempotent."""
        if self._accumulator.closing:
            raise ClientClosedError("the client is closed")
        if self._started:
            return
        self._started = True
        http = self._http_client()
        # the POSTs without httpx where it would make the same plain request
        self._lean = lean_pool(
            self.base_url,
            self._transport,
            max_connections=self.max_in_flight,
            max_body=MAX_ANSWER_BYTES,
        )
        self._sender = Sender(
            self._accumulator,
            http,
            self._throttle,
            self._board,
            stats=self._stats,
            failures=self._failures,
            observe=functools.partial(self._observe, learn=True),
            provider=self.provider,
            max_in_flight=self.max_in_flight,
            request_timeout=self.request_timeout,
            deadline=self.deadline,
            initial_backoff=self.initial_backoff,
            max_backoff=self.max_backoff,
            wait_commit=self.wait_commit,
            headers=self._headers,
            window=self._window,
            lean=self._lean,
        )
        self._sender.start()
        self._tasks = [asyncio.create_task(self._adjust(), name="store-client-adjust")]
        if self.follow_feedback:
            self._follower = FeedbackFollower(
                http,
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
        self._failures.raise_oldest()
        if self._accumulator.closing:
            raise ClientClosedError("the client is closed")
        wire = to_wire_all(bars)
        if not wire:
            return
        await self.start()
        async with asyncio.timeout(timeout):
            for first in range(0, len(wire), self.max_buffered):
                await self._accumulator.put(wire[first : first + self.max_buffered])
        # let the senders run: with room in the buffer nothing above waits, and a
        # producer writing in a loop would fill the whole buffer before the first
        # request goes out
        await asyncio.sleep(0)

    async def flush(self, timeout: float | None = None) -> None:
        """Send the partial batch and wait until every bar written before the call is
        committed by the store (with ``wait_commit=False``: queued there) or failed;
        then raise the oldest unreported ``BatchFailedError``.
        ``TimeoutError`` after ``timeout`` s (the batches keep going)."""
        if self._started:
            await self._accumulator.flush(timeout)
        self._failures.raise_oldest()

    async def aclose(self, timeout: float | None = None) -> None:
        """Send everything buffered, then stop (idempotent). After ``timeout`` s the
        rest is abandoned and reported as ``DeadlineExceededError``. Raises the oldest
        unreported failure; ``take_failures()`` has the others."""
        await self._close(timeout)
        self._failures.raise_oldest()

    # -- the other kinds ------------------------------------------------------------------

    async def write_options(self, snapshots: Iterable[Any], *, ts: datetime | None = None) -> int:
        """Store option snapshots (Core ``OptionSnapshot``s or mappings of their fields
        and ``ts``); ``ts``: the snapshot time of those without one (Core has none).
        See ``write_records``."""
        return await self.write_records("options", snapshots, defaults={"ts": ts} if ts else None)

    async def write_quotes(self, quotes: Iterable[Any]) -> int:
        """Store quotes (Core ``Quote``s or mappings; ``timestamp`` aware). See
        ``write_records``."""
        return await self.write_records("quotes", quotes)

    async def write_trades(self, trades: Iterable[Any]) -> int:
        """Store trades (mappings of Core ``Trade``'s fields and ``trade_id``: the
        venue's id or your sequence number; two identical prints are two trades). See
        ``write_records``."""
        return await self.write_records("trades", trades)

    async def write_fundamentals(self, fundamentals: Iterable[Any]) -> int:
        """Store fundamentals (mappings: ``symbol``, ``asof`` (a date), ``total_assets``,
        ``total_liabilities``, ``net_income``, ``eps``). See ``write_records``."""
        return await self.write_records("fundamentals", fundamentals)

    async def write_news(self, articles: Iterable[Any]) -> int:
        """Store news articles (mappings: ``article_id``, ``symbols``, ``title``, ``url``,
        ``published_at``, ``sentiment_score``). See ``write_records``."""
        return await self.write_records("news", articles)

    async def write_records(
        self, kind: str, items: Iterable[Any], *, defaults: Mapping[str, Any] | None = None
    ) -> int:
        """Store ``items`` of ``kind`` (options, quotes, trades, fundamentals, news) and
        return how many the store committed, once it did: unlike ``write`` (bars), this
        waits. The same rules as bars: ``batch_size`` per request, one request at a time
        for the call (call it from several tasks for more), paced by the store's
        feedback and ``Retry-After``, retried until ``deadline`` s, a 413 split in
        halves; delivered means committed (``wait_commit=True``, the default: with
        ``False`` the count is what the store queued). Raises ``InvalidBarError`` for an
        item that cannot be sent (nothing sent), else ``BatchFailedError`` at the first
        part that fails, with every item of the call not known to be stored
        (``BarsRejectedError``: refused, e.g. a 422 naming each problem by index within
        its part; ``BarsDeadLetteredError``: refused by the database, dead-lettered;
        ``DeadlineExceededError``)."""
        if kind not in RECORD_KINDS:
            raise ValueError(f"kind must be one of {', '.join(RECORD_KINDS)}, not {kind!r}")
        if self._accumulator.closing:
            raise ClientClosedError("the client is closed")
        records = to_records(items, defaults=defaults)
        if not records:
            return 0
        await self.start()
        assert self._sender is not None
        return await self._sender.send_records(f"/v1/{kind}", records, self.batch_size)

    def take_failures(self) -> list[BatchFailedError]:
        """Every failure not raised yet (oldest first); they will not be raised."""
        return self._failures.take()

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
            self._failures.raise_oldest()  # with an exception on the way out, do not mask it

    # -- reads -----------------------------------------------------------------------------

    def read_bars(
        self,
        provider: str,
        resolution: str,
        symbols: str | Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        resample_from: str | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[Bar, None]:
        """Every bar of ``provider`` and ``resolution`` in [``start``, ``end``) (aware
        datetimes; None: unbounded), as Core ``Bar``s with the store's exact
        ``Decimal``s: of ``symbols`` (a str is one symbol; a list is read in its order;
        None: all of the provider's, in symbol order), each symbol's oldest first; at
        most ``limit``. ``resample_from``: these ``resolution`` bars computed by the
        store from its finer ones of that resolution.

        ``async for bar in client.read_bars(...)``: an NDJSON export streamed (gzip) and
        decoded as it arrives, in memory bounded whatever the range's size. An export
        that breaks (connection dropped, body cut short, timeout) or that the store
        refuses for now (503: its export slots taken, after ``Retry-After``; 429, 408,
        5xx) is asked for again after the backoff, from the last bar received: no bar
        twice, none skipped. ``ReadFailedError`` when ``deadline`` s pass without a bar
        arriving, at once for a 4xx (a bad query, 401 without the tenant's ``token``).
        ``ValueError`` at the call for a blank provider or resolution, a naive time, a
        bad ``limit``. Leaving the loop early: close the generator (``aclose()``, or
        ``contextlib.aclosing``) to end the export at once.

        Reading does not start the write machinery (no senders, no feedback stream).
        """
        if self._accumulator.closing:
            raise ClientClosedError("the client is closed")
        query = BarQuery.of(provider, resolution, symbols, start, end, resample_from, limit)
        return self._reads().bars(query)

    async def latest(
        self, provider: str, symbols: str | Sequence[str], resolution: str
    ) -> dict[str, Bar]:
        """The newest bar of each of ``symbols`` (a str is one symbol) of ``provider``
        and ``resolution``, by symbol (as the store spells it: upper case), in their
        order; a symbol without a bar is absent. Retried as ``read_bars`` is;
        ``ReadFailedError`` when it cannot be had."""
        if self._accumulator.closing:
            raise ClientClosedError("the client is closed")
        if not provider.strip() or not resolution.strip():
            raise ValueError("provider and resolution must not be blank")
        listed = symbol_list(symbols) or ()
        return await self._reads().latest(provider, listed, resolution)

    def _reads(self) -> BarReader:
        if self._reader is None:
            self._reader = BarReader(
                self._http_client,
                self._headers,
                stats=self._stats,
                deadline=self.deadline,
                initial_backoff=self.initial_backoff,
                max_backoff=self.max_backoff,
                max_hold=self._throttle.max_hold,
            )
        return self._reader

    def _http_client(self) -> httpx.AsyncClient:
        """The httpx client (made at ``start`` or at the first read)."""
        if self._close_task is not None:
            raise ClientClosedError("the client is closed")
        if self._http is None:
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
        return self._http

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
            self._log.log(logging.ERROR, "on_feedback", "on_feedback raised", exc=True)

    def _wake(self) -> None:
        if self._sender is not None:
            self._sender.wake()

    async def _adjust(self) -> None:
        interval = self._throttle.interval
        while True:
            await asyncio.sleep(interval / 2)
            try:
                if self._throttle.tick():
                    self._wake()
            except Exception:
                self._log.log(logging.ERROR, "adjust", "rate adjustment failed", exc=True)

    # -- closing ---------------------------------------------------------------------------

    async def _close(self, timeout: float | None) -> None:
        """Every caller waits for the one close (a second ``aclose`` does not return
        before the first has flushed)."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._shut(timeout), name="store-close")
        await asyncio.shield(self._close_task)

    async def _shut(self, timeout: float | None) -> None:
        await self._accumulator.close()
        if not self._started:
            if self._http is not None:  # made for reads alone
                await self._http.aclose()
            return
        try:
            if self._sender is not None:
                await self._sender.stop(timeout)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._lean is not None:
                await self._lean.aclose()
            if self._http is not None:
                await self._http.aclose()
