"""A full disk while the dead-letter queue writes: nothing torn is left behind, and
a replay whose settle fails does not let its in-flight bars be claimed again.

ENOSPC is simulated by monkeypatching ``os.write`` for the dead-letter files only
(matched through ``/proc/self/fd``): it writes what fits, then fails, as a full
disk does. Everything else is real: files, coordinator, replay."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from market_data_store.coordinator import DeadLetterQueue, FeedbackBus, WriteCoordinator
from market_data_store.coordinator.replay import replay_dead_letters
from market_data_store.storage import BarRow
from tests.support.bars import row


def disk_full(monkeypatch: pytest.MonkeyPatch, on: Callable[[str], bool], room: int) -> None:
    """Writes to files whose name matches ``on`` get ``room`` bytes in all, then ENOSPC."""
    real_write = os.write
    left = room

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal left
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return real_write(fd, data)
        if not on(name):
            return real_write(fd, data)
        if left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[:left]))
        left -= written
        return written

    monkeypatch.setattr(os, "write", write)


async def test_a_save_cut_short_by_a_full_disk_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    await dlq.save([row(0)], "first")
    size = (tmp_path / "dlq.ndjson").stat().st_size
    with monkeypatch.context() as patch:
        disk_full(patch, lambda name: name == "dlq.ndjson", room=40)
        with pytest.raises(OSError, match="No space left") as raised:
            await dlq.save([row(i) for i in range(1, 50)], "during the disk full")
        assert raised.value.errno == errno.ENOSPC
    assert (tmp_path / "dlq.ndjson").stat().st_size == size  # the part written is gone
    await dlq.save([row(1)], "retried once there is room")  # as the worker does
    scan = await dlq.scan()
    assert [r.error for r in scan.records] == ["first", "retried once there is room"]
    assert scan.unreadable == []


class GatedRejectingSink:
    """Holds every write until ``gate`` is set, then rejects it (a data error)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.rows: list[BarRow] = []

    async def write(self, batch: Sequence[BarRow]) -> None:
        await self.gate.wait()
        self.rows.extend(batch)
        raise ValueError("still rejected")


async def test_a_settle_failing_on_a_full_disk_keeps_its_bars_out_of_the_next_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    for i in range(3):
        await dlq.save([row(i)], "earlier failure")
    sink = GatedRejectingSink()
    async with WriteCoordinator[BarRow](
        sink=sink,
        workers=1,
        batch_size=1,
        flush_interval=0,
        bus=FeedbackBus(),
        dead_letter_queue=dlq,
    ) as c:
        with monkeypatch.context() as patch:  # the in-flight journal cannot be written
            disk_full(patch, lambda name: ".claimed-" in name and name.endswith(".tmp"), 10)
            with pytest.raises(OSError, match="No space left") as raised:
                await replay_dead_letters(dlq, c, timeout=0.2)  # answers with bars pending
            assert raised.value.errno == errno.ENOSPC

        again = await replay_dead_letters(dlq, c, timeout=0.2)
        assert (again.records, again.items) == (0, 0)  # still the coordinator's
        assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
        scan = await dlq.scan()
        assert (len(scan.records), len(scan.in_flight)) == (0, 3)

        sink.gate.set()
        await c.wait_idle()
    assert sorted(r.ts for r in sink.rows) == [row(i).ts for i in range(3)]  # submitted once
    scan = await dlq.scan()  # the claimed file is let go of: its bars count again, once
    assert sorted((r.items[0].ts, r.error) for r in scan.records) == [
        (row(i).ts, "ValueError: still rejected") for i in range(3)
    ]
    claim = await dlq.claim()
    assert len(claim.records) == 3
    await dlq.settle(claim, claim.records)
    assert len(await dlq.records()) == 3
