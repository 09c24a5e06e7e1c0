"""Sinks with scripted behaviour, for worker and coordinator tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence


class RecordingSink:
    """Keeps every batch it is given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    @property
    def items(self) -> list[int]:
        return [i for b in self.batches for i in b]

    async def write(self, batch: Sequence[int]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.batches.append(list(batch))


class PoisonSink(RecordingSink):
    """Rejects, all or nothing, any batch containing a poison item (a data error)."""

    def __init__(self, poison: Iterable[int]) -> None:
        super().__init__()
        self.poison = set(poison)
        self.rejected_writes = 0

    async def write(self, batch: Sequence[int]) -> None:
        bad = self.poison.intersection(batch)
        if bad:
            self.rejected_writes += 1
            raise ValueError(f"invalid value {min(bad)}")
        await super().write(batch)


class OutageSink(RecordingSink):
    """Raises ConnectionError (retryable) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = asyncio.Event()
        self.failed_attempts = 0

    async def write(self, batch: Sequence[int]) -> None:
        if self.down.is_set():
            self.failed_attempts += 1
            raise ConnectionError("connection refused")
        await super().write(batch)


class FlakySink(RecordingSink):
    """Fails the first ``n`` writes with a timeout, then works."""

    def __init__(self, fail_first_n: int) -> None:
        super().__init__()
        self.remaining_failures = fail_first_n

    async def write(self, batch: Sequence[int]) -> None:
        if self.remaining_failures > 0:
            self.remaining_failures -= 1
            raise TimeoutError("transient")
        await super().write(batch)
