"""DLQ replay bookkeeping with a real coordinator and a real file: nothing is
removed from the dead-letter queue unless it landed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    ClaimInProgress,
    DeadLetterQueue,
    FeedbackBus,
    WriteCoordinator,
)
from market_data_store.coordinator.replay import replay_dead_letters
from market_data_store.storage import BarRow

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def row(i: int) -> BarRow:
    return BarRow("p", "S", "1m", T0 + timedelta(minutes=i), "1", "1", "1", "1", "1", False, T0)


class Sink:
    def __init__(self, delay: float = 0.0) -> None:
        self.rows: list[BarRow] = []
        self.delay = delay

    async def write(self, batch: Sequence[BarRow]) -> None:
        await asyncio.sleep(self.delay)
        self.rows.extend(batch)


async def filled(tmp_path: Path, n: int) -> DeadLetterQueue[BarRow]:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    for i in range(n):
        await dlq.save([row(i)], "earlier failure")
    return dlq


async def test_landed_records_leave_the_queue(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 3)
    sink = Sink()
    async with WriteCoordinator[BarRow](sink=sink, flush_interval=0.01, bus=FeedbackBus()) as c:
        result = await replay_dead_letters(dlq, c, timeout=5)
    assert (result.written, result.requeued_records, result.pending) == (3, 0, False)
    assert await dlq.records() == []
    assert len(sink.rows) == 3


async def test_refused_submissions_go_back(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 4)
    coordinator = WriteCoordinator[BarRow](sink=Sink(), bus=FeedbackBus())
    await coordinator.start()
    await coordinator.stop()  # stopped: every submission is refused
    result = await replay_dead_letters(dlq, coordinator, timeout=1)
    assert (result.items, result.requeued_records) == (0, 4)
    assert [r.items[0].ts for r in await dlq.records()] == [row(i).ts for i in range(4)]


async def test_not_landed_in_time_goes_back_too(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 2)
    async with WriteCoordinator[BarRow](
        sink=Sink(delay=0.5), workers=1, batch_size=1, flush_interval=0, bus=FeedbackBus()
    ) as c:
        result = await replay_dead_letters(dlq, c, timeout=0.05)
        assert result.pending
        assert result.requeued_records == 2
        assert len(await dlq.records()) == 2  # duplicates later, rather than a loss now


async def test_cancelled_replay_loses_nothing(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 3)
    async with WriteCoordinator[BarRow](
        sink=Sink(delay=0.5), workers=1, batch_size=1, flush_interval=0, bus=FeedbackBus()
    ) as c:
        task = asyncio.create_task(replay_dead_letters(dlq, c, timeout=30))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(await dlq.records()) == 3
        claim = await dlq.claim()  # not left locked
        await dlq.settle(claim, claim.records)


async def test_one_claim_at_a_time_and_unreadable_lines_are_kept(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 1)
    with (tmp_path / "dlq.ndjson").open("ab") as fh:
        fh.write(b'{"ts": 1.0, "error": "x", "metadata": {}, "items": [{"symbol": 5}]}\n')
    claim = await dlq.claim()
    with pytest.raises(ClaimInProgress):
        await dlq.claim()
    assert len(claim.records) == 1
    assert len(claim.unreadable) == 1
    await dlq.settle(claim, [])
    scan = await dlq.scan()
    assert (len(scan.records), len(scan.unreadable)) == (0, 1)  # kept for an operator


async def test_a_torn_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 1)
    with (tmp_path / "dlq.ndjson").open("ab") as fh:
        fh.write(b'{"ts": 1.0, "err')  # crash mid-write
    await dlq.save([row(7)], "after the crash")
    scan = await dlq.scan()
    assert [r.items[0].ts for r in scan.records] == [row(0).ts, row(7).ts]
    assert len(scan.unreadable) == 1
