"""DLQ replay bookkeeping with a real coordinator and a real file: nothing is
lost, and nothing is in the dead-letter queue twice."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from market_data_store.coordinator import DeadLetterQueue, FeedbackBus, WriteCoordinator
from market_data_store.coordinator.replay import replay_dead_letters
from market_data_store.storage import BarRow
from tests.support.bars import row
from tests.support.waits import until


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


def claimed_files(tmp_path: Path) -> list[str]:
    return [name for name in os.listdir(tmp_path) if ".claimed-" in name]


async def test_not_landed_in_time_stays_out_and_lands_later(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 2)
    sink = Sink(delay=0.2)
    async with WriteCoordinator[BarRow](
        sink=sink,
        workers=1,
        batch_size=1,
        flush_interval=0,
        bus=FeedbackBus(),
        dead_letter_queue=dlq,
    ) as c:
        result = await replay_dead_letters(dlq, c, timeout=0.05)
        assert result.pending
        assert (result.items, result.requeued_records) == (2, 0)
        assert await dlq.records() == []  # the coordinator has them: not in the queue twice
        assert len(claimed_files(tmp_path)) == 1  # kept aside on disk until they land
        again = await replay_dead_letters(dlq, c, timeout=0.05)
        assert (again.records, again.items) == (0, 0)  # held by the first replay
        await c.wait_idle()
    assert len(sink.rows) == 2
    assert claimed_files(tmp_path) == []  # dropped once finished (at the latest at stop)
    assert await dlq.records() == []


async def test_cancelled_replay_loses_nothing(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 3)
    sink = Sink(delay=0.1)
    async with WriteCoordinator[BarRow](
        sink=sink, workers=1, batch_size=1, flush_interval=0, bus=FeedbackBus()
    ) as c:
        task = asyncio.create_task(replay_dead_letters(dlq, c, timeout=30))
        await until(lambda: c.queue.unfinished > 0, what="the replay submitting")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.wait_idle()
    # whatever was submitted before the cancel landed; the rest is back, nothing twice
    back = [r.items[0].ts for r in await dlq.records()]
    assert sorted([r.ts for r in sink.rows] + back) == [row(i).ts for i in range(3)]
    claim = await dlq.claim()  # not left locked
    assert [r.items[0].ts for r in claim.records] == back
    await dlq.settle(claim, claim.records)


async def test_concurrent_claims_get_disjoint_records_and_unreadable_lines_are_kept(
    tmp_path: Path,
) -> None:
    dlq = await filled(tmp_path, 1)
    with (tmp_path / "dlq.ndjson").open("ab") as fh:
        fh.write(b'{"ts": 1.0, "error": "x", "metadata": {}, "items": [{"symbol": 5}]}\n')
    claim = await dlq.claim()
    await dlq.save([row(1)], "failed meanwhile")
    second = await dlq.claim()
    assert [r.items for r in claim.records] == [[row(0)]]
    assert [r.items for r in second.records] == [[row(1)]]
    assert (len(claim.unreadable), len(second.unreadable)) == (1, 0)
    await dlq.settle(second, second.records)
    await dlq.settle(claim, [])
    scan = await dlq.scan()
    assert [r.items for r in scan.records] == [[row(1)]]
    assert len(scan.unreadable) == 1  # kept for an operator
    assert claimed_files(tmp_path) == []


async def test_after_a_crash_an_item_is_claimed_once_with_its_latest_error(
    tmp_path: Path,
) -> None:
    """A replay's in-flight journal survives a crash; items dead-lettered afresh before
    the crash are then in both files, and claimed once."""
    dlq = await filled(tmp_path, 3)
    claim = await dlq.claim()
    await dlq.settle(claim, [], in_flight=claim.records, finished=lambda: False)
    await dlq.save([row(1)], "rejected again")  # then the process dies
    after_restart = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    claim = await after_restart.claim()  # folds the journal back in first, once
    assert sorted((r.items[0].ts, r.error) for r in claim.records) == [
        (row(0).ts, "earlier failure"),
        (row(1).ts, "rejected again"),
        (row(2).ts, "earlier failure"),
    ]
    await after_restart.settle(claim, claim.records)
    assert len(await after_restart.records()) == 3
    assert claimed_files(tmp_path) == []


async def test_a_torn_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    dlq = await filled(tmp_path, 1)
    with (tmp_path / "dlq.ndjson").open("ab") as fh:
        fh.write(b'{"ts": 1.0, "err')  # crash mid-write
    await dlq.save([row(7)], "after the crash")
    scan = await dlq.scan()
    assert [r.items[0].ts for r in scan.records] == [row(0).ts, row(7).ts]
    assert len(scan.unreadable) == 1
