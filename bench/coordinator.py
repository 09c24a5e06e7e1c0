"""Throughput of WriteCoordinator into a no-op sink, against a naive baseline.

    .venv/bin/python bench/coordinator.py [--items 200000] [--chunk 5000] [--repeat 3]

Pushes ``--items`` items through ``WriteCoordinator(capacity=10000, workers=4,
batch_size=500)`` via ``submit`` (one call per item) and via ``submit_many``
(``--chunk`` items per call), timed until every item reached the sink. The
baseline, measured in the same run, is the textbook design: an ``asyncio.Queue``
drained one item per ``get`` by 4 consumer tasks batching 500 at a time (the
shape of the original coordinator library). Ratios are what to compare across
machines; absolute numbers depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from market_data_store.coordinator import WriteCoordinator

CAPACITY, WORKERS, BATCH = 10_000, 4, 500


class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.count += len(batch)


async def run_submit(n: int, chunk: int) -> float:
    sink = CountingSink()
    start = time.perf_counter()
    async with WriteCoordinator[int](
        sink=sink, capacity=CAPACITY, workers=WORKERS, batch_size=BATCH
    ) as coord:
        submit = coord.submit
        for i in range(n):
            await submit(i)
        await coord.wait_idle()
    elapsed = time.perf_counter() - start
    assert sink.count == n, (sink.count, n)
    return n / elapsed


async def run_submit_many(n: int, chunk: int) -> float:
    sink = CountingSink()
    items = list(range(n))
    start = time.perf_counter()
    async with WriteCoordinator[int](
        sink=sink, capacity=CAPACITY, workers=WORKERS, batch_size=BATCH
    ) as coord:
        for lo in range(0, n, chunk):
            await coord.submit_many(items[lo : lo + chunk])
        await coord.wait_idle()
    elapsed = time.perf_counter() - start
    assert sink.count == n, (sink.count, n)
    return n / elapsed


async def run_baseline(n: int, chunk: int) -> float:
    """asyncio.Queue, one item per put/get, consumers batching by size or 0.25 s."""
    sink = CountingSink()
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=CAPACITY)

    async def consume() -> None:
        batch: list[int] = []
        while True:
            with contextlib.suppress(TimeoutError):
                batch.append(await asyncio.wait_for(q.get(), 0.25))
            if len(batch) >= BATCH or (batch and q.empty()):
                await sink.write(batch)
                for _ in batch:
                    q.task_done()
                batch = []

    start = time.perf_counter()
    tasks = [asyncio.create_task(consume()) for _ in range(WORKERS)]
    for i in range(n):
        await q.put(i)
    await q.join()
    elapsed = time.perf_counter() - start
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    assert sink.count == n
    return n / elapsed


def best_of(
    repeat: int, fn: Callable[[int, int], Coroutine[Any, Any, float]], n: int, chunk: int
) -> float:
    return max(asyncio.run(fn(n, chunk)) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best is kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    baseline = best_of(args.repeat, run_baseline, args.items, args.chunk)
    submit = best_of(args.repeat, run_submit, args.items, args.chunk)
    many = best_of(args.repeat, run_submit_many, args.items, args.chunk)
    print(f"baseline asyncio.Queue : {baseline:>12,.0f} items/s")
    print(f"submit                 : {submit:>12,.0f} items/s  ({submit / baseline:.1f}x baseline)")
    print(
        f"submit_many ({args.chunk:>6})   : {many:>12,.0f} items/s  "
        f"({many / baseline:.1f}x baseline)"
    )


if __name__ == "__main__":
    main()
