"""The producer client's writes of the other kinds (``write_options`` ... ``write_news``):
delivered means committed, refusals raised with the items, 413 split; real service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from market_data_core import OptionSnapshot, Quote

from market_data_store.client import (
    BarsDeadLetteredError,
    BarsRejectedError,
    InvalidBarError,
    StoreClient,
    SyncStoreClient,
)
from tests.support.facts import items, query
from tests.support.postgres import refusing
from tests.support.service import RunningService, running_service, service_settings


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(database_url, str(tmp_path), MDS_INGEST_MAX_BARS_PER_REQUEST="4")
    async with running_service(settings) as svc:
        yield svc


async def stored(svc: RunningService, kind: str) -> list[dict[str, object]]:
    answer = await svc.client.get(f"/v1/{kind}", params=query(kind))
    assert answer.status_code == 200, answer.text
    return list(answer.json()[kind])


async def test_core_models_and_mappings_are_committed_exactly(service: RunningService) -> None:
    snapshot = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    options = [
        OptionSnapshot(
            symbol="AAPL", expiry=datetime(2025, 1, 17, tzinfo=UTC), strike=Decimal(f"15{i}.50"),
            option_type="C", bid=Decimal("1.25"), delta=Decimal("-0.5E-1"),
        )
        for i in range(6)
    ]  # fmt: skip
    async with StoreClient(service.base_url, provider="ibkr", follow_feedback=False) as client:
        # 6 items in requests of at most 4 (the store's cap): a 413, then halves
        assert await client.write_options(options, ts=snapshot) == 6
        quote = Quote(symbol="AAPL", bid=Decimal("187.01"), timestamp=snapshot)
        assert await client.write_quotes([quote]) == 1
        assert await client.write_trades(items("trades", 3)) == 3
        fundamentals = items("fundamentals", 2, asof=lambda i: date(2024, 3, 31 - i))
        assert await client.write_fundamentals(fundamentals) == 2
        assert await client.write_news(items("news", 2)) == 2
        assert client.stats.splits >= 1
    chain = await stored(service, "options")
    assert [o["strike"] for o in chain] == [f"15{i}.50" for i in range(6)]
    assert {o["delta"] for o in chain} == {"-0.05"}
    assert {o["ts"] for o in chain} == {"2024-01-02T15:00:00Z"}
    (stored_quote,) = await stored(service, "quotes")
    assert stored_quote["bid"] == "187.01"
    assert stored_quote["ask"] is None
    assert len(await stored(service, "trades")) == 3
    assert [f["asof"] for f in await stored(service, "fundamentals")] == [
        "2024-03-30",
        "2024-03-31",
    ]
    assert len(await stored(service, "news")) == 2


async def test_a_refused_item_is_raised_with_what_was_not_stored(service: RunningService) -> None:
    trades = items("trades", 7, price=lambda i: "-" if i == 5 else "10")
    async with StoreClient(
        service.base_url, provider="ibkr", batch_size=4, follow_feedback=False
    ) as client:
        with pytest.raises(BarsRejectedError) as refused:
            await client.write_trades(trades)
        assert refused.value.status == 422
        assert [(e["index"], e["field"]) for e in refused.value.errors] == [(1, "price")]
        # the first part (4) is stored; the refused part (3) is handed back whole
        assert [t["trade_id"] for t in refused.value.bars] == ["t4", "t5", "t6"]
        with pytest.raises(InvalidBarError):
            await client.write_quotes([{"symbol": "X", "timestamp": datetime(2024, 1, 2)}])
        # what MessagePack cannot carry: refused before a single item is sent
        with pytest.raises(InvalidBarError, match="cannot be sent"):
            await client.write_fundamentals(items("fundamentals", 2, eps=lambda i: 10**30 * i))
        with pytest.raises(ValueError, match="kind must be one of"):
            await client.write_records("bars", [])
    assert [t["trade_id"] for t in await stored(service, "trades")] == ["t0", "t1", "t2", "t3"]


async def test_a_dead_lettered_item_is_raised_and_the_rest_committed(
    service: RunningService, database_url: str
) -> None:
    async with (
        refusing(database_url, "news", "article_id <> 'a1'"),
        StoreClient(service.base_url, provider="ibkr", follow_feedback=False) as client,
    ):
        with pytest.raises(BarsDeadLetteredError) as lost:
            await client.write_news(items("news", 3))
    assert lost.value.indices == [1]
    assert [a["article_id"] for a in lost.value.bars] == ["a1"]
    assert [a["article_id"] for a in await stored(service, "news")] == ["a0", "a2"]


async def test_a_dead_lettered_item_is_named_by_its_place_in_the_call(
    service: RunningService, database_url: str
) -> None:
    news = items("news", 11)
    async with (
        refusing(database_url, "news", "article_id <> 'a5'"),
        StoreClient(service.base_url, provider="ibkr", follow_feedback=False) as client,
    ):
        # parts of at most 4 (the store's cap): a5 is in the second
        with pytest.raises(BarsDeadLetteredError) as lost:
            await client.write_news(news)
    # a5, then the records of the parts never sent: positions in the call's list
    assert lost.value.indices is not None
    assert lost.value.indices[0] == 5
    assert [a["article_id"] for a in lost.value.bars] == [
        news[i]["article_id"] for i in lost.value.indices
    ]
    stored_ids = {a["article_id"] for a in await stored(service, "news")}
    assert "a5" not in stored_ids
    assert stored_ids | {a["article_id"] for a in lost.value.bars} == {
        a["article_id"] for a in news
    }


def _sync_records(base_url: str) -> int:
    with SyncStoreClient(base_url, provider="ibkr", follow_feedback=False) as client:
        return client.write_records("fundamentals", iter(items("fundamentals", 3)), timeout=20)


async def test_the_sync_client_writes_records(service: RunningService) -> None:
    # in a thread: the service answers on this test's event loop
    assert await asyncio.to_thread(_sync_records, service.base_url) == 3
    assert len(await stored(service, "fundamentals")) == 3
