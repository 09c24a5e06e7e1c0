"""The figures of bench/control.py (bench/control_watch.py), on fixed inputs."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).parents[1] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cw = _load("control_watch")


def test_percentile_interpolates_between_ranks() -> None:
    assert cw.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert cw.percentile([1.0, 2.0, 3.0, 4.0], 0.99) == pytest.approx(3.97)
    assert cw.percentile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert cw.percentile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert cw.percentile([7.0], 0.99) == 7.0
    assert math.isnan(cw.percentile([], 0.5))


def test_jain_index() -> None:
    assert cw.jain([5.0, 5.0, 5.0, 5.0]) == 1.0
    assert cw.jain([1.0, 0.0, 0.0, 0.0]) == 0.25  # one gets everything: 1/n
    assert cw.jain([1.0, 3.0]) == pytest.approx(16 / 20)
    assert cw.jain([0.0, 0.0]) == 1.0
    assert math.isnan(cw.jain([]))


def test_share_at_level_time_weights_the_transitions() -> None:
    events = [(0.0, "ok"), (2.0, "hard"), (5.0, "soft"), (6.0, "hard"), (12.0, "ok")]
    assert cw.share_at_level(events, 1.0, 9.0) == pytest.approx(6 / 8)  # 2-5 and 6-9
    assert cw.share_at_level(events, 1.0, 9.0, "soft") == pytest.approx(1 / 8)
    # the level at the start is the last one before it; none at all: ok
    assert cw.share_at_level([(-5.0, "hard"), (3.0, "ok")], 0.0, 4.0) == pytest.approx(3 / 4)
    assert cw.share_at_level([], 0.0, 4.0) == 0.0
    assert cw.share_at_level([(1.0, "hard")], 2.0, 2.0) == 0.0


def test_commits_are_dated_by_the_first_snapshot_that_sees_them() -> None:
    snapshots = [
        cw.Snapshot.parse(1.0, "100:100:"),
        cw.Snapshot.parse(2.0, "100:103:100,101"),
        cw.Snapshot.parse(3.0, "101:104:101"),
        cw.Snapshot.parse(4.0, "104:104:"),
    ]
    assert snapshots[1].xip == frozenset({100, 101})
    assert cw.commit_times(snapshots, [100, 101, 102, 103]) == {
        100: 3.0,  # in progress until xmin passed it
        101: 4.0,
        102: 2.0,  # below xmax, not in progress
        103: 3.0,
    }
    with pytest.raises(ValueError, match="not committed"):
        cw.commit_times(snapshots, [104])
    with pytest.raises(ValueError, match="frozen"):
        cw.commit_times(snapshots, [2])


def test_a_32_bit_xmin_takes_the_epoch_of_the_snapshot() -> None:
    epoch = 1 << 32
    assert cw.full_xid(3, epoch + 5) == epoch + 3
    assert cw.full_xid(epoch - 10, epoch + 5) == epoch - 10  # written before the wrap
    assert cw.full_xid(7, 9) == 7
    later = [cw.Snapshot.parse(1.0, f"{epoch + 2}:{epoch + 6}:")]
    assert cw.commit_times(later, [3, epoch - 10]) == {3: 1.0, epoch - 10: 1.0}


def test_cumulative_is_linear_between_commits() -> None:
    curve = cw.cumulative([(2.0, 10), (1.0, 5), (2.0, 1), (4.0, 4)])
    assert curve == ([1.0, 2.0, 4.0], [5, 16, 20])
    assert cw.committed_by(curve, 0.5) == 0  # before the first commit
    assert cw.committed_by(curve, 1.0) == 5
    assert cw.committed_by(curve, 1.5) == 10.5  # half of the 11 of the commit at 2.0
    assert cw.committed_by(curve, 3.0) == 18
    assert cw.committed_by(curve, 9.0) == 20  # after the last
    assert cw.window_rate(curve, 1.0, 3.0) == 6.5  # 5 -> 18 in 2 s


def test_an_even_rate_stays_even_however_the_windows_fall() -> None:
    # batches of 5,000 every 1/12 s (60,000 bars/s): a 0.5 s window holds 6 or 7 commits
    curve = cw.cumulative([(0.0, 0), *((i / 12, 5000) for i in range(1, 37))])
    rates = [cw.window_rate(curve, t / 100, t / 100 + 0.5) for t in range(250)]
    assert min(rates) == pytest.approx(60_000)
    assert max(rates) == pytest.approx(60_000)


def _commits(start: float, end: float, every: float, bars: int) -> list[tuple[float, int]]:
    """``bars`` at start + every, start + 2 x every, ... end."""
    return [(round(start + every * (i + 1), 6), bars) for i in range(round((end - start) / every))]


def test_recovery_waits_for_a_sustained_rate() -> None:
    # 200 bars/s for 1 s after the step, then 1,000 bars/s
    commits = [(10.0, 0), *_commits(10.0, 11.0, 0.1, 20), *_commits(11.0, 14.0, 0.1, 100)]
    curve = cw.cumulative(commits)
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0) == pytest.approx(0.96, abs=0.02)
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0, sustain=None) == pytest.approx(0.96, abs=0.02)
    assert cw.recovery_time(curve, 11.0, 14.0, 900.0) == 0.0
    assert cw.recovery_time(curve, 10.0, 14.0, 1500.0) is None  # never that fast
    assert cw.recovery_time(curve, 10.0, 10.8, 100.0) is None  # no room for window + sustain
    assert cw.recovery_time(curve, 10.0, 10.3, 100.0, sustain=None) is None


def test_a_queue_drained_at_once_is_no_recovery() -> None:
    # 600 bars just after the step (what the queue held), then 200 bars/s until 12 s
    commits = [(10.0, 0), (10.05, 600), *_commits(10.05, 12.05, 0.1, 20)]
    commits += _commits(12.05, 14.05, 0.1, 100)
    curve = cw.cumulative(commits)
    assert cw.window_rate(curve, 10.0, 10.5) >= 900  # the first window alone would pass
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0) == pytest.approx(2.0, abs=0.03)
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0, sustain=0.0) == 0.0


def test_a_rate_that_does_not_last_is_back_but_does_not_stay() -> None:
    # 1,000 bars/s for 2 s after the step (requests that waited in the store), then 200
    commits = [(10.0, 0), *_commits(10.0, 12.0, 0.1, 100), *_commits(12.0, 14.0, 0.1, 20)]
    curve = cw.cumulative(commits)
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0) == 0.0
    assert cw.recovery_time(curve, 10.0, 14.0, 900.0, sustain=None) is None


def test_database_urls_through_the_link() -> None:
    url = "postgresql://u:p%40ss@db.example:5433/x?sslmode=disable"
    assert cw.upstream_of(url) == ("db.example", 5433)
    assert cw.through(url, 6000) == "postgresql://u:p%40ss@127.0.0.1:6000/x?sslmode=disable"
    socket_url = "postgresql://postgres:@/postgres?host=/tmp/pg"  # pgserver's
    assert cw.upstream_of(socket_url) == "/tmp/pg/.s.PGSQL.5432"
    assert cw.through(socket_url, 6000) == "postgresql://postgres:@127.0.0.1:6000/postgres"


async def test_the_link_forwards_both_ways_and_counts_what_it_sends() -> None:

    echoed = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            echoed.set()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = await asyncio.to_thread(cw.ThrottledLink, f"postgresql://u@127.0.0.1:{port}/db")
    try:
        link.rate = 1e9  # capped, far above what this sends
        assert link.rate == 1e9
        reader, writer = await asyncio.open_connection("127.0.0.1", cw.upstream_of(link.url)[1])
        writer.write(b"x" * 100_000)
        await writer.drain()
        assert await reader.readexactly(100_000) == b"x" * 100_000
        assert link.sent == 100_000  # what went towards the database only
        writer.close()
        await writer.wait_closed()
        await echoed.wait()  # the link passed the end on
    finally:
        link.close()
        server.close()
        await server.wait_closed()
