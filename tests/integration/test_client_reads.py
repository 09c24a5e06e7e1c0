"""The client's reads (``StoreClient.read_bars``, ``latest``; ``SyncStoreClient``'s) against
the real service and database: exact, bounded in memory, resumed after a real cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from market_data_core import Bar

from market_data_store.client import ReadFailedError, StoreClient, SyncStoreClient
from tests.support.service import RunningService, ServiceFactory, service_factory
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ALPHA, BETA = "alpha-token-0123456789", "beta-token-0123456789"
NDJSON = {"Accept": "application/x-ndjson"}


@pytest.fixture
def service_with(database_url: str, tmp_path: Path) -> ServiceFactory:
    return service_factory(database_url, str(tmp_path))


@pytest.fixture
async def service(service_with: ServiceFactory) -> AsyncIterator[RunningService]:
    async with service_with() as svc:
        yield svc


def minute_bars(symbol: str, n: int, *, start: int = 0, resolution: str = "1m") -> list[Bar]:
    """``n`` bars of ``symbol`` a minute apart from ``T0 + start`` minutes; prices of
    several scales (trailing zeros kept), a volume with a fraction."""
    out = []
    for i in range(start, start + n):
        price = Decimal(10_000 + i).scaleb(-2)
        out.append(
            Bar(
                symbol=symbol,
                ts=T0 + timedelta(minutes=i),
                open=price,
                high=price + Decimal("1.250"),
                low=price - Decimal("0.0001"),
                close=price + Decimal("0.5"),
                volume=Decimal(f"{1000 + i}.125"),
                resolution=resolution,
                delayed=i % 2 == 0,
            )
        )
    return out


async def put(base_url: str, bars: list[Bar], *, provider: str = "ibkr", **options: Any) -> None:
    async with StoreClient(
        base_url, provider=provider, follow_feedback=False, batch_size=10_000, **options
    ) as writer:
        await writer.write(bars)


def key(bar: Bar) -> tuple[str, ...]:
    """Every field of a bar as text: equal Decimals of another scale differ."""
    return (
        bar.symbol, bar.resolution, bar.ts.isoformat(), str(bar.open), str(bar.high),
        str(bar.low), str(bar.close), str(bar.volume), str(bar.delayed),
    )  # fmt: skip


def reader(base_url: str, **options: Any) -> StoreClient:
    return StoreClient(base_url, provider="ibkr", follow_feedback=False, **options)


async def test_a_range_of_several_symbols_is_read_exactly(service: RunningService) -> None:
    aapl, msft, ibm = minute_bars("AAPL", 300), minute_bars("MSFT", 200), minute_bars("IBM", 50)
    await put(service.base_url, aapl + msft + ibm + minute_bars("AAPL", 10, resolution="1h"))
    await put(service.base_url, minute_bars("AAPL", 5), provider="other")
    start, end = T0 + timedelta(minutes=20), T0 + timedelta(minutes=250)
    async with reader(service.base_url) as client:
        read = [b async for b in client.read_bars("ibkr", "1m", ["MSFT", "aapl"], start, end)]
        expected = [b for b in msft + aapl if start <= b.ts < end]
        assert [key(b) for b in read] == [key(b) for b in expected]
        assert all(b.ts.utcoffset() == timedelta(0) for b in read)
        assert read[0].open == Decimal("100.20")
        assert str(read[0].high) == "101.450"

        # all of the provider's symbols, in key order; a limit across them; one symbol
        everything = [key(b) async for b in client.read_bars("ibkr", "1m")]
        assert everything == [key(b) for b in aapl + ibm + msft]
        limited = [key(b) async for b in client.read_bars("ibkr", "1m", ["IBM", "MSFT"], limit=60)]
        assert limited == [key(b) for b in (ibm + msft)[:60]]
        one = [key(b) async for b in client.read_bars("ibkr", "1h", "AAPL")]
        assert one == [key(b) for b in minute_bars("AAPL", 10, resolution="1h")]

        # resampled by the store: 5 x 1m -> 5m
        five = [b async for b in client.read_bars("ibkr", "5m", "IBM", resample_from="1m")]
        assert len(five) == 10
        assert (five[0].open, five[0].close) == (ibm[0].open, ibm[4].close)
        assert five[0].volume == sum(b.volume for b in ibm[:5])
        assert client.stats.bars_read == len(read) + len(everything) + 60 + 10 + 10
        assert client.stats.read_retries == 0


async def test_a_large_read_holds_little_memory(service: RunningService) -> None:
    n = 80_000
    await put(service.base_url, minute_bars("AAPL", n))
    async with reader(service.base_url) as client:
        count, last = 0, None
        bars = client.read_bars("ibkr", "1m", "AAPL")
        first = await anext(bars)  # connected: what follows is the stream itself
        tracemalloc.start()
        try:
            async for bar in bars:
                count += 1
                last = bar
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert first.ts == T0
    assert last is not None
    assert last.ts == T0 + timedelta(minutes=n - 1)
    assert count == n - 1
    # each NDJSON line is over 250 bytes: a body of over 20 MB. The peak is a few
    # buffers' worth, whatever the range (the store's side of the export, its socket
    # buffers included, runs in this process too and is counted)
    assert peak < 4 * 1024 * 1024 < n * 250 / 4, peak


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
async def test_an_interrupted_export_resumes_after_the_last_bar(
    service: RunningService, encoding: str
) -> None:
    n = 60_000
    written = minute_bars("AAPL", n // 2) + minute_bars("MSFT", n // 2)
    await put(service.base_url, written)
    port = int(service.base_url.rsplit(":", 1)[1])
    proxy = await TcpProxy(("127.0.0.1", port)).start()
    try:
        async with reader(
            f"http://127.0.0.1:{proxy.port}", initial_backoff=0.01, max_backoff=0.05,
            headers={"accept-encoding": encoding},
        ) as client:  # fmt: skip
            read: list[tuple[str, ...]] = []
            async for bar in client.read_bars("ibkr", "1m", ["AAPL", "MSFT"]):
                read.append(key(bar))
                if len(read) in (100, n // 2 + 5):  # within AAPL, then within MSFT
                    proxy.cut()  # every connection reset, mid-stream
                    proxy.restore()
            # the first cut always interrupts; the second may come after the rest of
            # the body already sits in the proxy's and the kernel's buffers
            assert client.stats.read_retries >= 1
            assert client.stats.read_requests >= 2
    finally:
        await proxy.close()
    assert read == [key(b) for b in written]  # every bar, once, in order


async def test_a_read_waits_for_an_export_slot(service_with: ServiceFactory) -> None:
    async with service_with(MDS_READS_MAX_EXPORTS="1") as service:
        await put(service.base_url, minute_bars("AAPL", 20_000) + minute_bars("MSFT", 30))
        url = f"{service.base_url}/v1/bars"
        params = {"provider": "ibkr", "resolution": "1m", "symbol": "AAPL"}
        async with (
            reader(service.base_url, max_hold=0.2) as client,  # Retry-After cut to 0.2 s
            httpx.AsyncClient() as other,
        ):
            async with other.stream("GET", url, params=params, headers=NDJSON) as held:
                assert held.status_code == 200  # the one export slot, held

                async def read() -> list[Bar]:
                    return [b async for b in client.read_bars("ibkr", "1m", "MSFT")]

                task = asyncio.create_task(read())
                await until(lambda: client.stats.read_retries >= 1, what="a 503 met")
                assert not task.done()
            # the held export ended: the client gets the slot after Retry-After
            bars = await task
        assert [key(b) for b in bars] == [key(b) for b in minute_bars("MSFT", 30)]


async def test_latest_has_the_newest_bar_of_each_symbol_found(service: RunningService) -> None:
    await put(service.base_url, minute_bars("AAPL", 30) + minute_bars("MSFT", 3, start=100))
    async with reader(service.base_url) as client:
        latest = await client.latest("ibkr", ["msft", "NOPE", "AAPL"], "1m")
        assert list(latest) == ["MSFT", "AAPL"]  # the list's order; NOPE has none
        assert key(latest["AAPL"]) == key(minute_bars("AAPL", 1, start=29)[0])
        assert key(latest["MSFT"]) == key(minute_bars("MSFT", 1, start=102)[0])
        assert await client.latest("ibkr", "IBM", "1m") == {}


async def test_a_refused_read_raises_at_once(service: RunningService) -> None:
    async with reader(service.base_url) as client:
        with pytest.raises(ReadFailedError) as refused:
            async for _ in client.read_bars("ibkr", "1x", "AAPL"):
                pass
        assert refused.value.status == 400
        assert "resolution" in str(refused.value)
        assert client.stats.read_retries == 0
        with pytest.raises(ValueError, match="timezone"):
            client.read_bars("ibkr", "1m", start=datetime(2024, 1, 1))
        with pytest.raises(ReadFailedError) as not_found:
            await client.latest("ibkr", "AAPL", "nope")
        assert not_found.value.status == 400


async def test_a_tenant_reads_its_own_bars(service_with: ServiceFactory) -> None:
    tenants = json.dumps({"alpha": ALPHA, "beta": BETA})
    async with service_with(MDS_AUTH_TENANTS=tenants) as service:
        await put(service.base_url, minute_bars("AAPL", 3), token=ALPHA)
        await put(service.base_url, minute_bars("AAPL", 5, start=10), token=BETA)
        async with reader(service.base_url, token=BETA) as beta:
            bars = [key(b) async for b in beta.read_bars("ibkr", "1m", "AAPL")]
            assert bars == [key(b) for b in minute_bars("AAPL", 5, start=10)]
            assert (await beta.latest("ibkr", "AAPL", "1m"))["AAPL"].ts == T0 + timedelta(
                minutes=14
            )
        async with reader(service.base_url) as nobody:
            with pytest.raises(ReadFailedError) as refused:
                async for _ in nobody.read_bars("ibkr", "1m", "AAPL"):
                    pass
            assert refused.value.status == 401


def _sync_reads(base_url: str) -> tuple[list[Bar], list[Bar], dict[str, Bar]]:
    with SyncStoreClient(base_url, provider="ibkr", follow_feedback=False) as client:
        every = list(client.read_bars("ibkr", "1m", ["MSFT", "AAPL"]))
        some = client.read_bars("ibkr", "1m", "AAPL")
        first = [next(some) for _ in range(3)]
        with contextlib.closing(some):  # left early: the export ends
            pass
        return every, first, client.latest("ibkr", ["AAPL", "NOPE"], "1m")


async def test_the_sync_client_reads(service: RunningService) -> None:
    aapl, msft = minute_bars("AAPL", 2500), minute_bars("MSFT", 10)
    await put(service.base_url, aapl + msft)
    every, first, latest = await asyncio.to_thread(_sync_reads, service.base_url)
    assert [key(b) for b in every] == [key(b) for b in msft + aapl]
    assert [key(b) for b in first] == [key(b) for b in aapl[:3]]
    assert list(latest) == ["AAPL"]
    assert key(latest["AAPL"]) == key(aapl[-1])
