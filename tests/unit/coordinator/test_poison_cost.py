"""What poison items cost the writers: counted sink writes, not time.

``k`` items the sink refuses (non-retryably) in a batch of ``n`` cost at most
``1 + k * (2 * ceil(log2 n) + 2)`` writes wherever they sit, one of them at most
``ceil(log2 n) + 3``, spread ones about ``ceil(log2 n) + 2`` each and dense ones
one or two per item of the batch; every good item is written exactly once and every poison item
dead-lettered alone, with its own error.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from market_data_store.coordinator import (
    BoundedQueue,
    CircuitBreaker,
    DeadLetterQueue,
    FeedbackBus,
    RetryPolicy,
    SinkWorker,
)

N = 5000
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_ms=1, max_backoff_ms=2)


class RefusingSink:
    """All or nothing: refuses a batch holding a poison item, naming the first one (as
    a COPY does); keeps every item it wrote."""

    def __init__(self, poison: Iterable[int]) -> None:
        self.poison = set(poison)
        self.written: Counter[int] = Counter()

    async def write(self, batch: Sequence[int]) -> None:
        for item in batch:
            if item in self.poison:
                raise ValueError(f"invalid value {item}")
        self.written.update(batch)


class CountingSink:
    """Counts write attempts, successful or not, of the sink it wraps."""

    def __init__(self, inner: RefusingSink) -> None:
        self.inner = inner
        self.attempts = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.attempts += 1
        await self.inner.write(batch)


def log2(n: int) -> int:
    return math.ceil(math.log2(n))


def worst_case(k: int, n: int) -> int:
    return 1 + k * (2 * log2(n) + 2)


def spread(k: int, n: int) -> int:
    return 1 + k * (log2(n) + 2)


async def deliver_one_batch(
    sink: object, n: int, bus: FeedbackBus, tmp_path: Path
) -> DeadLetterQueue[int]:
    """Queue ``n`` items, then let one worker take them as a single batch."""
    q = BoundedQueue[int](n, bus=bus)
    dlq = DeadLetterQueue[int](tmp_path / "dlq.ndjson")
    worker = SinkWorker[int](
        1,
        q,
        sink,  # type: ignore[arg-type]
        batch_size=n,
        flush_interval=0.01,
        retry_policy=FAST_RETRY,
        circuit_breaker=CircuitBreaker(failure_threshold=1000),
        dead_letters=dlq,
    )
    await q.put_many(list(range(n)))
    worker.start()
    await asyncio.wait_for(q.join(), 10)
    await worker.stop()
    return dlq


async def cost(poison: set[int], n: int, bus: FeedbackBus, tmp_path: Path) -> int:
    """Writes spent on one batch of ``n`` items; asserts every item's fate."""
    refusing = RefusingSink(poison)
    sink = CountingSink(refusing)
    dlq = await deliver_one_batch(sink, n, bus, tmp_path)
    assert refusing.written == Counter(i for i in range(n) if i not in poison)
    assert not refusing.written or max(refusing.written.values()) == 1  # written exactly once
    records = await dlq.records()
    assert sorted(i for r in records for i in r.items) == sorted(poison)
    assert all(len(r.items) == 1 for r in records)
    assert all(r.error == f"ValueError: invalid value {r.items[0]}" for r in records)
    return sink.attempts


@pytest.mark.parametrize("at", [0, 1, 2500, 3333, N - 2, N - 1])
async def test_one_poison_item_in_5000_costs_at_most_16_writes(
    at: int, bus: FeedbackBus, tmp_path: Path
) -> None:
    # halving both halves every time took 25 to 27
    assert await cost({at}, N, bus, tmp_path) <= log2(N) + 3 == 16


@pytest.mark.parametrize(
    "poison",
    [
        {1000, 1001, 1002},
        {0, 2500, N - 1},
        {7, 1234, 2222, 2999, 3001, 3500, 4096, 4500, 4998, 4999},
        set(random.Random(8).sample(range(N), 100)),
    ],
    ids=["3-adjacent", "3-spread", "10-spread", "100-random"],
)
async def test_spread_poison_costs_about_log_n_writes_each(
    poison: set[int], bus: FeedbackBus, tmp_path: Path
) -> None:
    assert await cost(poison, N, bus, tmp_path) <= spread(len(poison), N)


@pytest.mark.parametrize(
    "poison",
    [set(range(1000)), set(range(0, 1000, 2)), set(range(0, 1000, 3)), set(range(400, 500))],
    ids=["all", "every-other", "every-third", "100-adjacent"],
)
async def test_dense_poison_costs_at_most_two_writes_per_item_of_the_batch(
    poison: set[int], bus: FeedbackBus, tmp_path: Path
) -> None:
    """A search per item would cost ``n * log2 n`` here, and halving both halves
    about ``2n``: each search starts with a prefix the size of the last gap."""
    assert await cost(poison, 1000, bus, tmp_path) <= 2 * 1000 + 2 * log2(1000) + 2


async def test_the_worst_case_bound_holds_for_random_batches(
    bus: FeedbackBus, tmp_path: Path
) -> None:
    rng = random.Random(8)
    cases = [({0, 1, N - 1}, N)]  # a gap of 0, then the longest: the galloping worst case
    for _ in range(60):
        n = rng.randint(2, 3000)
        cases.append((set(rng.sample(range(n), rng.randint(1, min(n, 30)))), n))
    for i, (poison, n) in enumerate(cases):
        path = tmp_path / str(i)
        path.mkdir()
        assert await cost(poison, n, bus, path) <= worst_case(len(poison), n), (poison, n)


async def test_a_batch_level_refusal_dead_letters_no_good_item(
    bus: FeedbackBus, tmp_path: Path
) -> None:
    """A sink refusing big batches (a program limit, not a bad row): the search finds
    no item refused alone, so everything is written and nothing dead-lettered."""

    class RefusesBigBatches(RefusingSink):
        async def write(self, batch: Sequence[int]) -> None:
            if len(batch) > 300:
                raise ValueError("batch too large")
            await super().write(batch)

    refusing = RefusesBigBatches(())
    dlq = await deliver_one_batch(refusing, 1000, bus, tmp_path)
    assert refusing.written == Counter(range(1000))
    assert await dlq.records() == []


async def test_a_transient_failure_during_the_search_is_retried_not_taken_for_poison(
    bus: FeedbackBus, tmp_path: Path
) -> None:
    """The second and third writes (halves of the refused batch) time out once each:
    they are retried, and only the real poison item is dead-lettered."""

    class FlakyDuringSearch(RefusingSink):
        def __init__(self, poison: Iterable[int]) -> None:
            super().__init__(poison)
            self.calls = 0

        async def write(self, batch: Sequence[int]) -> None:
            self.calls += 1
            if self.calls in (2, 4):
                raise TimeoutError("transient")
            await super().write(batch)

    refusing = FlakyDuringSearch({700})
    dlq = await deliver_one_batch(refusing, 1000, bus, tmp_path)
    assert refusing.written == Counter(i for i in range(1000) if i != 700)
    assert [r.items for r in await dlq.records()] == [[700]]
