"""DeadLetterQueue: NDJSON on disk, durable appends, typed round trips."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from pydantic import BaseModel

from market_data_store.contracts import Bar
from market_data_store.coordinator import DeadLetterQueue, DLQRecord


@dataclass
class Item:
    v: int


class Tick(msgspec.Struct):
    symbol: str
    price: Decimal
    ts: datetime


class Quote(BaseModel):
    symbol: str
    bid: Decimal


async def test_save_and_replay(tmp_path: Path) -> None:
    dlq = DeadLetterQueue[Item](tmp_path / "dlq.ndjson")
    await dlq.save([Item(1), Item(2)], RuntimeError("boom"), {"k": "v"})
    await dlq.save([Item(3)], RuntimeError("kapow"), {})
    recs = await dlq.replay(10)
    assert len(recs) == 2
    assert isinstance(recs[0], DLQRecord)
    assert recs[0].metadata == {"k": "v"}
    assert recs[0].items == [Item(1), Item(2)]
    assert recs[0].error == "RuntimeError: boom"
    assert recs[1].items == [Item(3)]
    assert recs[0].ts <= recs[1].ts
    assert await dlq.count() == 2


async def test_file_is_ndjson_one_record_per_line(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "dlq.ndjson"  # mkdirs by default
    dlq = DeadLetterQueue[Item](path)
    await dlq.save([Item(1)], "plain reason")
    await dlq.save([Item(2)], ValueError("bad"))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"ts", "error", "metadata", "items"}
    assert first["items"] == [{"v": 1}]
    assert first["error"] == "plain reason"


async def test_decimal_and_datetime_survive_round_trip(tmp_path: Path) -> None:
    ts = datetime(2024, 1, 2, 14, 30, 0, 123456, tzinfo=UTC)
    price = Decimal("187.1500000001")
    ticks = DeadLetterQueue[Tick](tmp_path / "ticks.ndjson")
    await ticks.save([Tick("AAPL", price, ts)], "x")
    (rec,) = await ticks.replay()
    assert rec.items == [Tick("AAPL", price, ts)]
    assert isinstance(rec.items[0].price, Decimal)

    bar = Bar(symbol="MSFT", ts=ts, open=Decimal("1.10"), high=Decimal("2.2"),
              low=Decimal("1.0"), close=Decimal("2.00"), volume=Decimal("12034"))  # fmt: skip
    bars = DeadLetterQueue[Bar](tmp_path / "bars.ndjson")
    await bars.save([bar], "x")
    (rec2,) = await bars.replay()
    assert rec2.items == [bar]
    assert str(rec2.items[0].close) == "2.00"  # exact, trailing zero kept

    quotes: DeadLetterQueue[Quote] = DeadLetterQueue(tmp_path / "q.ndjson", item_type=Quote)
    await quotes.save([Quote(symbol="X", bid=Decimal("0.1"))], "x")
    assert (await quotes.replay())[0].items == [Quote(symbol="X", bid=Decimal("0.1"))]


async def test_untyped_queue_returns_plain_json_values(tmp_path: Path) -> None:
    dlq: DeadLetterQueue[object] = DeadLetterQueue(tmp_path / "dlq.ndjson")
    await dlq.save([{"price": Decimal("1.5")}, 3], "x")
    assert (await dlq.replay())[0].items == [{"price": "1.5"}, 3]


async def test_replay_limit_and_missing_file(tmp_path: Path) -> None:
    dlq = DeadLetterQueue[Item](tmp_path / "dlq.ndjson")
    for i in range(10):
        await dlq.save([Item(i)], RuntimeError(f"error-{i}"))
    assert [r.items[0].v for r in await dlq.replay(5)] == [0, 1, 2, 3, 4]
    missing = DeadLetterQueue[Item](tmp_path / "nope" / "x.ndjson", mkdirs=False)
    assert await missing.replay() == []
    assert not (tmp_path / "nope").exists()


async def test_concurrent_saves_all_land_intact(tmp_path: Path) -> None:
    dlq = DeadLetterQueue[Item](tmp_path / "dlq.ndjson")
    await asyncio.gather(*[dlq.save([Item(i)] * 50, RuntimeError(f"e{i}")) for i in range(40)])
    recs = await dlq.replay(1000)
    assert sorted(r.items[0].v for r in recs) == list(range(40))
    assert all(len(r.items) == 50 for r in recs)


async def test_save_is_fsynced_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    import os

    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    dlq = DeadLetterQueue[Item](tmp_path / "dlq.ndjson")
    await dlq.save([Item(1)], "x")
    assert len(synced) == 1


async def test_torn_last_line_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dlq.ndjson"
    dlq = DeadLetterQueue[Item](path)
    await dlq.save([Item(1)], "x")
    with path.open("ab") as fh:
        fh.write(b'{"ts": 1.0, "error": "tor')  # crash mid-write
    assert [r.items for r in await dlq.replay()] == [[Item(1)]]
    assert "unreadable dead-letter line" in caplog.text


async def test_objects_msgspec_cannot_encode_are_kept_as_text(tmp_path: Path) -> None:
    class Opaque:
        __slots__ = ()

        def __str__(self) -> str:
            return "opaque-thing"

    dlq: DeadLetterQueue[object] = DeadLetterQueue(tmp_path / "dlq.ndjson")
    await dlq.save([Opaque()], "x")
    assert (await dlq.replay())[0].items == ["opaque-thing"]


async def test_a_dead_lettered_bar_carries_its_tenant_and_an_old_one_is_defaults(
    tmp_path: Path,
) -> None:
    from market_data_store.storage import DEFAULT_TENANT, BarRow
    from tests.support.bars import row

    path = tmp_path / "dlq.ndjson"
    dlq = DeadLetterQueue[BarRow](path)
    await dlq.save([row(0, tenant="beta")], "refused")
    line = json.loads(path.read_text())
    assert line["items"][0]["tenant"] == "beta"
    del line["items"][0]["tenant"]  # as 0.5.0 wrote it, before tenants
    with path.open("a") as file:
        file.write(json.dumps(line) + "\n")
    tenants = [r.items[0].tenant for r in await dlq.records()]
    assert tenants == ["beta", DEFAULT_TENANT]
