"""``SyncStoreClient``: the producer client for code without an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine, Generator, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, Unpack

from market_data_store.contracts import Bar

from .errors import BatchFailedError, ClientClosedError
from .options import ClientOptions, ClientStats
from .store_client import BarLike, StoreClient
from .wire import Level

R = TypeVar("R")

CLOSE_GRACE = 5.0
"""Seconds the loop thread may take to stop after the client closed."""
READ_BATCH = 1000
"""Bars ``read_bars`` hands from the client's loop to the caller's thread at once."""


class SyncStoreClient:
    """A ``StoreClient`` on an event loop of its own, in a daemon thread.

    Why a thread rather than ``asyncio.run`` per call: the client's senders,
    feedback follower and connection pool live *between* calls (bars buffered by
    one ``write`` are sent while the caller prepares the next); ``asyncio.run``
    would tear them down after every call. Each method hands a coroutine to that
    loop and blocks until it is done; methods may be called from any thread (one
    call at a time is the simple use; concurrent calls are safe).

    ``on_feedback`` runs on the client's thread: it must not call this object.
    Always ``close()`` (or use ``with``): the thread is a daemon, and bars still
    buffered when the interpreter exits are lost.
    """

    def __init__(self, base_url: str, *, provider: str, **options: Unpack[ClientOptions]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="store-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._client = self._call(self._make(base_url, provider, options), None)
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(base_url: str, provider: str, options: ClientOptions) -> StoreClient:
        client = StoreClient(base_url, provider=provider, **options)
        await client.start()
        return client

    @property
    def client(self) -> StoreClient:
        """The wrapped client (its properties may be read from any thread)."""
        return self._client

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    @property
    def level(self) -> Level:
        return self._client.level

    @property
    def rate(self) -> float | None:
        return self._client.rate

    def write(self, bars: Iterable[BarLike], *, timeout: float | None = None) -> None:
        """``StoreClient.write``; ``bars`` is read before anything is sent."""
        self._check_open()
        bars = list(bars)  # iterated in the caller's thread, not the loop's
        self._call(self._client.write(bars, timeout=timeout), timeout)

    def write_records(
        self,
        kind: str,
        items: Iterable[Any],
        *,
        defaults: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> int:
        """``StoreClient.write_records`` (options, quotes, trades, fundamentals, news):
        the count committed, once committed; ``items`` is read before anything is sent."""
        self._check_open()
        listed = list(items)
        return self._call(self._client.write_records(kind, listed, defaults=defaults), timeout)

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
    ) -> Generator[Bar, None, None]:
        """``StoreClient.read_bars`` as an iterator: the bars come from the client's
        loop ``READ_BATCH`` at a time (memory stays bounded). Leaving the loop early:
        ``close()`` the iterator (or let it go) to end the export."""
        self._check_open()
        bars = self._client.read_bars(
            provider,
            resolution,
            symbols,
            start,
            end,
            resample_from=resample_from,
            limit=limit,
        )
        return self._iterate(bars)

    def _iterate(self, bars: AsyncGenerator[Bar, None]) -> Generator[Bar, None, None]:
        try:
            while taken := self._call(_take(bars, READ_BATCH), None):
                yield from taken
        finally:
            if self._loop.is_running() and threading.current_thread() is not self._thread:
                self._call(bars.aclose(), CLOSE_GRACE)

    def latest(
        self, provider: str, symbols: str | Sequence[str], resolution: str
    ) -> dict[str, Bar]:
        """``StoreClient.latest``."""
        self._check_open()
        return self._call(self._client.latest(provider, symbols, resolution), None)

    def flush(self, timeout: float | None = None) -> None:
        """``StoreClient.flush``."""
        self._check_open()
        self._call(self._client.flush(timeout), timeout)

    def take_failures(self) -> list[BatchFailedError]:
        """``StoreClient.take_failures`` (also after ``close``)."""
        if self._loop.is_closed() or not self._loop.is_running():
            return self._client.take_failures()
        return self._call(self._take_failures(), None)

    async def _take_failures(self) -> list[BatchFailedError]:
        return self._client.take_failures()

    def close(self, timeout: float | None = None) -> None:
        """``StoreClient.aclose``, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.aclose(timeout), timeout)
        finally:
            self._stop_loop()

    def __enter__(self) -> SyncStoreClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # do not mask the exception on its way out; failures stay in take_failures()
            self._call(self._client._close(None), None)
        finally:
            self._closed = True
            self._stop_loop()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

    def _call(self, coro: Coroutine[Any, Any, R], timeout: float | None) -> R:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncStoreClient called from its own thread (on_feedback?)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # the coroutine enforces ``timeout`` itself; the margin lets it say so first
        try:
            return future.result(None if timeout is None else timeout + CLOSE_GRACE)
        except TimeoutError:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_GRACE)
        if not self._thread.is_alive():
            self._loop.close()


async def _take(bars: AsyncGenerator[Bar, None], most: int) -> list[Bar]:
    """The next ``most`` bars (fewer at the end; none: the end)."""
    taken: list[Bar] = []
    async for bar in bars:  # leaving the loop does not close the generator
        taken.append(bar)
        if len(taken) >= most:
            break
    return taken
