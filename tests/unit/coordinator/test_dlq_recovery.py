"""What an earlier run of the process left beside the dead-letter file (claimed
files of a replay interrupted by a crash, half-written temporaries) is seen, and
folded back in once, with every item kept once in its latest record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from market_data_store.coordinator import DeadLetterQueue
from market_data_store.storage import BarRow
from tests.support.bars import row


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


async def crashed_mid_replay(path: Path) -> None:
    """A replay's in-flight journal is on disk, one of its bars dead-lettered afresh
    meanwhile, a journal write was cut short; then the process dies."""
    dlq = DeadLetterQueue[BarRow](path)
    for i in range(3):
        await dlq.save([row(i)], "earlier failure")
    claim = await dlq.claim()
    await dlq.settle(claim, [], in_flight=claim.records, finished=lambda: False)
    await dlq.save([row(1)], "rejected again")
    (path.parent / f".{path.name}.claimed-1.tmp").write_bytes(b'{"ts": 1.0, "err')


@pytest.mark.parametrize("name", ["dlq.ndjson", "bars[1].ndjson"])
async def test_after_a_restart_the_records_of_an_interrupted_replay_count_and_are_folded_back(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    await crashed_mid_replay(path)
    expected = [
        (row(0).ts, "earlier failure"),
        (row(1).ts, "rejected again"),
        (row(2).ts, "earlier failure"),
    ]

    after_restart = DeadLetterQueue[BarRow](path)
    scan = await after_restart.scan()  # GET /admin/dlq: they count, once each
    assert sorted((r.items[0].ts, r.error) for r in scan.records) == expected
    assert scan.in_flight == []

    await after_restart.open()
    assert listing(tmp_path) == [name]  # one file, no temporaries
    records = await after_restart.records()
    assert sorted((r.items[0].ts, r.error) for r in records) == expected
    await after_restart.open()  # once only
    assert len(await after_restart.records()) == 3

    claim = await after_restart.claim()
    assert (len(claim.records), claim.duplicates) == (3, 0)
    await after_restart.settle(claim, claim.records)
    assert listing(tmp_path) == [name]


async def test_a_claim_keeps_the_newest_error_of_an_item_whatever_the_file_order(
    tmp_path: Path,
) -> None:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    await dlq.save([row(1)], "old error")
    claim = await dlq.claim()  # a replay that submits nothing
    await dlq.save([row(1)], "new error")  # the bar fails again meanwhile
    await dlq.settle(claim, claim.records)  # the old record is written back after the new
    again = await dlq.claim()
    assert [(r.items, r.error) for r in again.records] == [([row(1)], "new error")]
    assert again.duplicates == 1
    await dlq.settle(again, again.records)


async def test_records_held_by_a_running_replay_are_reported_in_flight(tmp_path: Path) -> None:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    for i in range(2):
        await dlq.save([row(i)], "earlier failure")
    claim = await dlq.claim()
    await dlq.save([row(5)], "failed meanwhile")
    scan = await dlq.scan()
    assert ([r.items for r in scan.records], len(scan.in_flight)) == ([[row(5)]], 2)
    done = False
    await dlq.settle(claim, claim.records[1:], in_flight=claim.records[:1], finished=lambda: done)
    scan = await dlq.scan()
    assert [r.items for r in scan.in_flight] == [[row(0)]]
    assert sorted(r.items[0].ts for r in scan.records) == [row(1).ts, row(5).ts]
    done = True
    scan = await dlq.scan()
    assert scan.in_flight == []
    await dlq.prune()
    assert [n for n in listing(tmp_path) if ".claimed-" in n] == []


async def test_a_coordinator_folds_the_leftovers_back_when_it_starts(tmp_path: Path) -> None:
    from market_data_store.coordinator import WriteCoordinator

    class Sink:
        async def write(self, batch: object) -> None:
            pass

    path = tmp_path / "dlq.ndjson"
    await crashed_mid_replay(path)
    coordinator = WriteCoordinator[BarRow](
        sink=Sink(), coord_id="t", dead_letter_queue=DeadLetterQueue[BarRow](path)
    )
    await coordinator.start()
    try:
        assert listing(tmp_path) == ["dlq.ndjson"]  # folded back at start, not at a replay
        assert len(await DeadLetterQueue[BarRow](path).records()) == 3
    finally:
        await coordinator.stop()
