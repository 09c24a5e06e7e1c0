"""The producer client (market_data_store.client) against the real service and database."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from market_data_core import Bar

from market_data_store.client import (
    BarsRejectedError,
    ClientClosedError,
    DeadlineExceededError,
    Feedback,
    StoreClient,
    SyncStoreClient,
)
from market_data_store.client import sender as sender_module
from market_data_store.client.credit import INITIAL_PART
from market_data_store.client.http1 import Http1Pool
from market_data_store.client.wire import WireBar, as_dicts
from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from tests.support.bars import T0, wire_bar, wire_bars
from tests.support.postgres import count_bars, stored_at_least, stored_bars
from tests.support.service import (
    RunningService,
    ServiceFactory,
    running_service,
    service_factory,
    service_settings,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

LOCAL = "test/bars"
HARD, SOFT, OK = BackpressureLevel.hard, BackpressureLevel.soft, BackpressureLevel.ok


@pytest.fixture
def service_with(database_url: str, tmp_path: Path) -> ServiceFactory:
    return service_factory(database_url, str(tmp_path))


@pytest.fixture
async def service(service_with: ServiceFactory) -> AsyncIterator[RunningService]:
    async with service_with() as svc:
        yield svc


@dataclass
class Exchange:
    method: str
    path: str
    content_type: str | None
    body: bytes
    status: int
    retry_after: str | None
    sent: float
    answered: float


class Recorder(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps what went over the wire (POSTs only)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.posts: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = await self._inner.handle_async_request(request)
        if request.method == "POST":
            self.posts.append(
                Exchange(
                    request.method,
                    request.url.path,
                    request.headers.get("content-type"),
                    request.content,
                    response.status_code,
                    response.headers.get("retry-after"),
                    sent,
                    time.monotonic(),
                )
            )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def sizes(self) -> list[int]:
        return [len(msgspec.msgpack.decode(p.body)["bars"]) for p in self.posts]

    def statuses(self) -> list[int]:
        return [p.status for p in self.posts]


# Bars as a Python producer hands them over: an aware datetime and Decimals, whose
# scale is stored as given.
PYTHON_VALUES: dict[str, Any] = {
    "ts_as": "datetime",
    "open": Decimal("187.150"),
    "high": Decimal("187.40"),
    "low": Decimal("186.9"),
    "close": Decimal("187.02"),
    "volume": Decimal("120034"),
}
bar = partial(wire_bar, **PYTHON_VALUES)
bars = partial(wire_bars, **PYTHON_VALUES)


async def publish(svc: RunningService, level: BackpressureLevel, cid: str = LOCAL) -> None:
    bus: FeedbackBus = svc.components.feedback_bus
    await bus.publish(FeedbackEvent.create(cid, 8000, 10000, level, "test"))


@asynccontextmanager
async def proxy_to(svc: RunningService) -> AsyncIterator[TcpProxy]:
    port = httpx.URL(svc.base_url).port
    assert port is not None
    proxy = await TcpProxy(("127.0.0.1", port)).start()
    try:
        yield proxy
    finally:
        await proxy.close()


# -- the wire and the data -------------------------------------------------------------


async def test_batches_go_as_msgpack_and_every_bar_is_stored_exactly(
    service: RunningService, database_url: str
) -> None:
    eastern = timezone(timedelta(hours=-5))
    sent: list[Bar | dict[str, Any]] = []
    for i in range(2500):
        if i % 3 == 0:  # Core Bar models, decimals with trailing zeros
            sent.append(Bar(**bar(i, volume=Decimal("100.000"))))
        elif i % 3 == 1:  # plain dicts: floats, ints, text; a time in another zone
            ts = (T0 + timedelta(minutes=i)).astimezone(eastern)
            sent.append(bar(i, ts=ts, open=187.15, high=188, low="186.90", volume=7))
        else:
            sent.append(bar(i, delayed=True))
    wire = Recorder()
    async with StoreClient(
        service.base_url, provider="ibkr", batch_size=1000, wait_commit=True, transport=wire
    ) as client:
        for first in range(0, len(sent), 700):  # writes do not line up with batches
            await client.write(sent[first : first + 700])
    sizes = wire.sizes()
    assert sizes[0] == INITIAL_PART  # alone, before the store said anything
    assert sum(sizes) == 2500
    assert max(sizes) <= 1000
    for post in wire.posts:
        assert (post.path, post.content_type) == ("/v1/bars", "application/msgpack")
        assert post.status == 201
        body = msgspec.msgpack.decode(post.body)
        assert body["provider"] == "ibkr"
        # times as MessagePack timestamps, Decimals as their text, floats as floats
        assert all(isinstance(b["ts"], datetime) for b in body["bars"])
        assert all(isinstance(b["open"], str | float) for b in body["bars"])
    stats = client.stats
    assert (stats.bars_written, stats.bars_sent, stats.bars_accepted) == (2500, 2500, 2500)
    assert (stats.bars_committed, stats.bars_failed, stats.requests) == (2500, 0, len(sizes))
    assert client.coordinators == {LOCAL}

    rows = await stored_bars(database_url)
    assert len(rows) == 2500
    for i, row in enumerate(rows):
        assert row["ts"] == T0 + timedelta(minutes=i)
        text = [str(row[f]) for f in ("open", "high", "low", "close", "volume")]
        if i % 3 == 0:
            assert text == ["187.150", "187.40", "186.9", "187.02", "100.000"]
        elif i % 3 == 1:
            assert text == ["187.15", "188", "186.90", "187.02", "7"]
        else:
            assert text == ["187.150", "187.40", "186.9", "187.02", "120034"]
        assert row["delayed"] is (i % 3 == 2)


async def test_bad_bars_raise_with_the_problem_and_are_never_retried(
    service: RunningService, database_url: str
) -> None:
    wire = Recorder()
    client = StoreClient(service.base_url, provider="ibkr", transport=wire)
    await client.write([bar(0), bar(1, low=Decimal("188"))])
    with pytest.raises(BarsRejectedError) as info:
        await client.flush(timeout=10)
    await client.aclose()
    error = info.value
    assert error.status == 422
    assert error.errors == [{"index": 1, "field": "low", "message": "must be <= min(open, close)"}]
    assert error.bars[1]["low"] == "188"  # the bars, as sent: write them again once fixed
    assert wire.statuses() == [422]
    assert client.stats.retries == 0
    assert await stored_bars(database_url) == []


async def test_a_batch_too_large_for_the_store_is_split(
    service_with: ServiceFactory, database_url: str
) -> None:
    wire = Recorder()
    async with (
        service_with(MDS_INGEST_MAX_BARS_PER_REQUEST="100") as svc,
        StoreClient(
            svc.base_url, provider="ibkr", batch_size=250, max_in_flight=1, transport=wire
        ) as client,
    ):
        await client.write(bars(250))
    posts = wire.posts
    refused = [i for i, p in enumerate(posts) if p.status == 413]
    assert refused  # the store's credit lets more than 100 bars go at once
    for i in refused:  # each refused part comes back in halves, sent next
        n = wire.sizes()[i]
        assert wire.sizes()[i + 1 : i + 3] == [n // 2, n - n // 2]
    assert sum(n for n, p in zip(wire.sizes(), posts, strict=True) if p.status == 201) == 250
    assert client.stats.splits == len(refused)
    await until(lambda: stored_at_least(database_url, 250), what="250 bars stored")


async def test_a_bad_half_of_a_split_batch_does_not_lose_the_other_half(
    service_with: ServiceFactory, database_url: str
) -> None:
    """A 413 split whose first half is refused: that half comes back as a failure, the
    other half is still sent and stored (before the fix it was silently dropped)."""
    batch = [*bars(3), bar(3, low=Decimal("999")), *bars(196, 4)]
    async with service_with(MDS_INGEST_MAX_BARS_PER_REQUEST="100") as svc:
        client = StoreClient(svc.base_url, provider="ibkr", batch_size=200, max_in_flight=1)
        await client.write(batch)
        with pytest.raises(BarsRejectedError) as info:
            await client.aclose(timeout=30)
    assert len(info.value.bars) == 100  # the half holding the bad bar, handed back
    assert info.value.status == 422
    # the other half is stored (202: queued)
    await until(lambda: stored_at_least(database_url, 100), what="the other half stored")


# -- the lean HTTP/1.1 path and httpx -----------------------------------------------------


@dataclass
class Posts:
    """POSTs made through the lean pool and through httpx (spied on)."""

    lean: int = 0
    httpx: int = 0


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> Posts:
    seen = Posts()
    lean_post, httpx_send = Http1Pool.post, httpx.AsyncClient.send

    async def post(self: Http1Pool, *args: Any, **kwargs: Any) -> Any:
        seen.lean += 1
        return await lean_post(self, *args, **kwargs)

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        seen.httpx += request.method == "POST"
        return await httpx_send(self, request, **kwargs)

    monkeypatch.setattr(Http1Pool, "post", post)
    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    for name in ("http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return seen


async def test_default_clients_post_through_the_lean_pool_and_every_bar_is_stored(
    service: RunningService, database_url: str, posts: Posts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bars go back to dicts only for a failure: doing it for every part (issue 20's
    # sender did) cost a producer more CPU than encoding them
    handed_back: list[int] = []

    def spy(bars: list[WireBar]) -> list[dict[str, Any]]:
        handed_back.append(len(bars))
        return as_dicts(bars)

    monkeypatch.setattr(sender_module, "as_dicts", spy)
    eastern = timezone(timedelta(hours=-5))
    sent: list[Bar | dict[str, Any]] = []
    for i in range(3000):
        if i % 3 == 0:
            sent.append(Bar(**bar(i)))
        elif i % 3 == 1:
            ts = (T0 + timedelta(minutes=i)).astimezone(eastern)
            sent.append(bar(i, ts=ts, open=187.15, high=Decimal("1.884E+2"), volume=7))
        else:
            sent.append(bar(i, delayed=True, volume=Decimal("0E-8")))
    async with StoreClient(
        service.base_url, provider="ibkr", batch_size=500, max_in_flight=2, wait_commit=True
    ) as client:
        await client.write(sent)
        await client.flush(timeout=30)
        stream_connects = client.stats.stream_connects
    stats = client.stats
    assert (stats.bars_committed, stats.transport_errors) == (3000, 0)
    assert handed_back == []
    assert stats.requests >= 6  # batches of 500, in parts when the credit is smaller
    # the feedback stream alone on httpx
    assert (posts.lean, posts.httpx) == (stats.requests, 0)
    assert stream_connects >= 1
    rows = await stored_bars(database_url)
    assert len(rows) == 3000
    for i, row in enumerate(rows):
        assert row["ts"] == T0 + timedelta(minutes=i)
        text = [str(row[f]) for f in ("open", "high", "low", "close", "volume")]
        if i % 3 == 0:
            assert text == ["187.150", "187.40", "186.9", "187.02", "120034"]
        elif i % 3 == 1:
            assert text == ["187.15", "188.4", "186.9", "187.02", "7"]
        else:
            assert text == ["187.150", "187.40", "186.9", "187.02", "0E-8"]
        assert row["delayed"] is (i % 3 == 2)


async def test_the_lean_pool_keeps_its_connections_and_reports_rejections(
    service: RunningService, posts: Posts
) -> None:
    client = StoreClient(
        service.base_url, provider="ibkr", batch_size=10, max_in_flight=2, follow_feedback=False
    )
    for first in range(0, 100, 10):
        await client.write(bars(10, first))
        await client.flush(timeout=10)
    assert client._lean is not None
    assert client._lean.connects == 1  # one request at a time: one kept-alive connection
    await client.write([bar(100), bar(101, low=Decimal("188"))])
    with pytest.raises(BarsRejectedError) as info:
        await client.flush(timeout=10)
    await client.aclose()
    assert info.value.status == 422
    assert info.value.bars[1]["low"] == "188"
    assert posts.lean == 11
    assert posts.httpx == 0


async def test_a_custom_transport_or_a_proxy_keeps_httpx(
    service: RunningService,
    database_url: str,
    posts: Posts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with StoreClient(
        service.base_url, provider="ibkr", transport=Recorder(), follow_feedback=False
    ) as client:
        await client.write(bars(20))
    assert client._lean is None
    assert (posts.lean, posts.httpx) == (0, 1)
    # a proxy from the environment (a TCP relay to the store: it takes the absolute-form
    # request as it is); through the relay, or nowhere while it is cut
    async with proxy_to(service) as relay:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{relay.port}")
        client = StoreClient(
            service.base_url,
            provider="ibkr",
            follow_feedback=False,
            initial_backoff=0.05,
            max_backoff=0.1,
        )
        relay.cut()
        await client.write(bars(20, 20))
        await until(lambda: client.stats.transport_errors >= 1, what="the cut relay")
        relay.restore()
        await client.aclose(timeout=20)
    assert client._lean is None
    assert client.stats.bars_accepted == 20
    assert posts.lean == 0
    assert posts.httpx >= 3
    await until(lambda: stored_at_least(database_url, 40), what="40 bars stored")


# -- retries -----------------------------------------------------------------------------


async def test_503_is_retried_after_its_retry_after(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """A hung database fills a queue of 100 (overflow ``error``): the next request is
    refused at once with 503 + Retry-After; the client waits that long, then lands it."""
    settings = service_settings(
        proxy.url_for(database_url),
        str(tmp_path),
        MDS_COORDINATOR_CAPACITY="100",
        MDS_COORDINATOR_BATCH_SIZE="10",
        MDS_COORDINATOR_WORKERS="1",
        MDS_COORDINATOR_OVERFLOW_STRATEGY="error",
        MDS_INGEST_MAX_BARS_PER_REQUEST="100",
    )
    wire = Recorder()
    async with running_service(settings) as svc:
        client = StoreClient(
            svc.base_url,
            provider="ibkr",
            batch_size=100,
            max_in_flight=1,
            # queued mode: answered at 202, the credit does not hold bars back while
            # the database hangs, so the queue overflows (committed mode never sees it)
            wait_commit=False,
            follow_feedback=False,  # the answers' levels and the 503s only
            probe_interval=0.1,
            transport=wire,
        )
        proxy.hang()  # the database stops answering: writes stall, the queue fills
        await client.write(bars(200))
        await until(lambda: client.stats.refused >= 1, timeout=15, what="a 503")
        proxy.restore()
        await client.flush(timeout=30)
        await client.aclose()
        await asyncio.wait_for(svc.components.coordinator.wait_idle(), 30)
    statuses = wire.statuses()
    assert statuses[0] == 202
    assert 503 in statuses
    assert statuses[-1] == 202
    for refused, after in itertools.pairwise(wire.posts):
        if refused.status == 503:
            assert refused.retry_after is not None
            assert after.sent - refused.answered >= float(refused.retry_after) - 0.05
    stats = client.stats
    assert stats.refused >= 1
    assert stats.retries >= 1
    assert stats.throttled_seconds >= 1
    assert stats.bars_accepted == 200
    assert client.coordinators == {LOCAL}
    assert await count_bars(database_url) == 200


async def test_connection_errors_are_retried_until_the_store_is_reachable(
    service: RunningService, database_url: str
) -> None:
    async with proxy_to(service) as proxy:
        proxy.cut()  # nothing gets through: connections are refused/reset
        base = f"http://127.0.0.1:{proxy.port}"
        async with StoreClient(
            base,
            provider="ibkr",
            wait_commit=True,
            initial_backoff=0.05,
            max_backoff=0.2,
        ) as client:
            await client.write(bars(50))
            await until(lambda: client.stats.transport_errors >= 2, what="failed attempts")
            assert client.stats.bars_accepted == 0
            proxy.restore()
            await client.flush(timeout=20)
    assert client.stats.bars_committed == 50
    assert client.stats.retries >= 2
    assert await count_bars(database_url) == 50


async def test_an_unreachable_store_ends_in_deadline_exceeded_with_the_bars(
    service: RunningService, database_url: str
) -> None:
    async with proxy_to(service) as proxy:
        proxy.cut()
        client = StoreClient(
            f"http://127.0.0.1:{proxy.port}",
            provider="ibkr",
            deadline=1.0,
            initial_backoff=0.05,
            max_backoff=0.2,
        )
        await client.write(bars(30))
        with pytest.raises(DeadlineExceededError) as info:
            await client.flush(timeout=10)
        await client.aclose()
    assert len(info.value.bars) == 30
    assert info.value.attempts >= 2
    assert info.value.last_error is not None
    assert await count_bars(database_url) == 0


# -- feedback ----------------------------------------------------------------------------


async def test_with_credit_soft_cuts_nothing_hard_pauses_ok_resumes(
    service: RunningService,
) -> None:
    wire = Recorder()
    events: list[Feedback] = []
    async with StoreClient(
        service.base_url,
        provider="ibkr",
        batch_size=10,
        max_in_flight=1,
        transport=wire,
        on_feedback=events.append,
    ) as client:
        await until(lambda: client.stream_connected, what="the stream")
        await client.write(bars(10))
        await client.flush(timeout=10)
        assert client.coordinators == {LOCAL}
        assert client.rate is None  # never pushed back yet

        await publish(service, SOFT)
        await until(lambda: client.level == "soft", what="soft")
        assert client.rate is None  # the store's credit paces the client, not a rate
        assert not client.paused

        await publish(service, HARD)
        await until(lambda: client.level == "hard", what="hard")
        assert client.paused
        posts = len(wire.posts)
        await client.write(bars(10, 10))
        await asyncio.sleep(0.5)
        assert len(wire.posts) == posts  # paused: nothing starts

        await publish(service, OK)
        await client.flush(timeout=10)  # resumed
        assert client.level == "ok"
        assert len(wire.posts) == posts + 1
    levels = [(e.level, e.via) for e in events if e.reason == "test"]
    assert levels == [("soft", "stream"), ("hard", "stream"), ("ok", "stream")]
    assert client.stats.throttled_seconds >= 0.4
    assert client.stats.feedback_events >= 4  # the snapshot, then soft, hard, ok


async def test_follows_every_coordinator_until_its_own_is_known(service: RunningService) -> None:
    await publish(service, HARD, "elsewhere/bars")  # another replica's, say
    events: list[Feedback] = []
    async with StoreClient(
        service.base_url,
        provider="ibkr",
        batch_size=10,
        probe_interval=0.3,
        on_feedback=events.append,
    ) as client:
        await until(lambda: client.level == "hard", what="hard from elsewhere")
        assert client.coordinators == frozenset()
        await client.write(bars(10))
        await client.flush(timeout=10)  # a probe learns whose queue takes the bars: ok
        assert client.coordinators == {LOCAL}
        assert client.level == "ok"
        await publish(service, HARD, "elsewhere/bars")
        await asyncio.sleep(0.2)
        assert client.level == "ok"  # not ours
    assert ("elsewhere/bars", "hard") in [(e.coordinator_id, e.level) for e in events]


async def test_the_stream_resumes_with_last_event_id_after_a_cut(service: RunningService) -> None:
    events: list[Feedback] = []
    async with (
        proxy_to(service) as proxy,
        StoreClient(
            f"http://127.0.0.1:{proxy.port}", provider="ibkr", on_feedback=events.append
        ) as client,
    ):
        await until(lambda: client.stream_connected, what="the stream")
        await until(lambda: bool(events), what="the snapshot")
        proxy.cut()
        await until(lambda: not client.stream_connected, what="the cut")
        # missed while away: a snapshot would only show the last (ok)
        await publish(service, HARD)
        await publish(service, OK)
        proxy.restore()
        await until(
            lambda: [e.level for e in events if e.reason == "test"] == ["hard", "ok"],
            timeout=20,
            what="the replay",
        )
        assert client.stream_connected
        assert client.level == "ok"
        assert client.stats.stream_connects == 2


async def test_writes_go_on_without_the_stream(
    service_with: ServiceFactory, database_url: str
) -> None:
    async with (
        service_with(MDS_FEEDBACK_SSE_ENABLED="false") as svc,
        StoreClient(svc.base_url, provider="ibkr", batch_size=50, wait_commit=True) as client,
    ):
        await client.write(bars(200))
        await client.flush(timeout=10)
        assert not client.stream_connected
    assert client.stats.stream_connects == 0
    assert client.stats.bars_committed == 200
    assert client.coordinators == {LOCAL}  # learned from the answers
    assert await count_bars(database_url) == 200


async def test_a_small_queue_is_never_hard_nor_full_and_nothing_is_lost(
    service_with: ServiceFactory, database_url: str
) -> None:
    """A producer much faster than a small store: the credit keeps the queue under
    its high watermark, so no 503 and no ``hard``, and every bar is committed."""
    events: list[Feedback] = []
    async with (
        service_with(
            MDS_COORDINATOR_CAPACITY="1000",
            MDS_COORDINATOR_BATCH_SIZE="100",
            MDS_COORDINATOR_WORKERS="1",
        ) as svc,
        StoreClient(
            svc.base_url, provider="ibkr", batch_size=250, on_feedback=events.append
        ) as client,
    ):
        await until(lambda: client.stream_connected, what="the stream")
        for first in range(0, 8000, 1000):
            await client.write(bars(1000, first))
    assert "hard" not in {e.level for e in events}
    stats = client.stats
    assert (stats.refused, stats.bars_committed, stats.bars_failed) == (0, 8000, 0)
    assert await count_bars(database_url) == 8000  # committed means stored: no waiting


# -- the synchronous wrapper --------------------------------------------------------------


def _sync_session(base_url: str) -> tuple[int, int, BarsRejectedError | None]:
    with SyncStoreClient(base_url, provider="ibkr", batch_size=100, wait_commit=True) as client:
        client.write(iter(bars(250)))  # any iterable
        client.flush(timeout=20)
        committed = client.stats.bars_committed
        assert client.level == "ok"
        assert client.rate is None
        assert client.client.coordinators == {LOCAL}
        client.write([bar(1000, low=Decimal("999"))])
        rejected: BarsRejectedError | None = None
        try:
            client.flush(timeout=20)
        except BarsRejectedError as exc:
            rejected = exc
        assert client.take_failures() == []
    client.close()  # idempotent
    closed = 0
    try:
        client.write(bars(1))
    except ClientClosedError:
        closed = 1
    return committed, closed, rejected


async def test_sync_client_from_a_thread(service: RunningService, database_url: str) -> None:
    # the service runs on this loop: the blocking client must run in another thread
    committed, closed, rejected = await asyncio.to_thread(_sync_session, service.base_url)
    assert committed == 250
    assert closed == 1
    assert rejected is not None
    assert rejected.status == 422
    assert await count_bars(database_url) == 250


def _sync_exit_with_error(base_url: str) -> list[Any]:
    try:
        with SyncStoreClient(base_url, provider=" ", batch_size=10):
            raise AssertionError("unreachable")
    except ValueError as exc:
        errors: list[Any] = [exc]
    try:
        with SyncStoreClient(base_url, provider="ibkr", batch_size=10) as client:
            client.write([bar(0, high=Decimal("1"))])
            raise KeyError("the caller's own")
    except KeyError as exc:
        errors.append(exc)
    errors.extend(client.take_failures())
    return errors


async def test_sync_client_bad_options_and_exits_with_an_exception(
    service: RunningService,
) -> None:
    errors = await asyncio.to_thread(_sync_exit_with_error, service.base_url)
    assert [type(e) for e in errors] == [ValueError, KeyError, BarsRejectedError]
