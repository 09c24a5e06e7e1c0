"""Dead-letter replay through the real service into a real PostgreSQL: repeated,
concurrent, while earlier replays are still being written, with the cause still
there (a test-only trigger rejects "poison" bars) and after it is removed.

Whatever the sequence, each bar that was in the file is in it at most once, and
not at all once it landed."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from market_data_store.coordinator import DeadLetterQueue, WriteCoordinator
from market_data_store.storage import BarRow, Row
from tests.support.bars import rows
from tests.support.postgres import stored_bars
from tests.support.service import RunningService, running_service, service_settings

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POISON = "POISON"

_ADD_POISON_TRIGGER = f"""
CREATE FUNCTION test_reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.symbol = '{POISON}' THEN
        RAISE EXCEPTION 'test poison row %', NEW.ts USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_reject_poison BEFORE INSERT OR UPDATE ON bars
    FOR EACH ROW EXECUTE FUNCTION test_reject_poison();
"""
_DROP_POISON_TRIGGER = """
DROP TRIGGER test_reject_poison ON bars;
DROP FUNCTION test_reject_poison();
"""


GOOD = rows(10, symbol="GOOD")
BAD = rows(20, symbol=POISON)


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=TOKEN,
        # a replay answers after this even when its bars are still being written
        MDS_INGEST_COMMIT_TIMEOUT="0.2",
    )
    async with running_service(settings) as svc:
        yield svc


@pytest.fixture
async def poison(database_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection of the test's own, with the poison trigger in place."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(_ADD_POISON_TRIGGER)
    try:
        yield conn
    finally:
        await conn.close()


async def seed(service: RunningService) -> DeadLetterQueue[Row]:
    """The service's own queue (one process owns a dead-letter path), filled."""
    dlq = service_queue(service)
    for item in [*GOOD, *BAD]:  # one record per bar, as bisection leaves them
        await dlq.save([item], "an earlier failure")
    return dlq


def service_queue(service: RunningService) -> DeadLetterQueue[Row]:
    coordinator: WriteCoordinator[Row] = service.components.coordinator
    dlq = coordinator.dead_letter_queue
    assert dlq is not None
    return dlq


async def replay(client: httpx.AsyncClient) -> dict[str, object]:
    response = await client.post("/admin/dlq/replay", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def dead_lettered(dlq: DeadLetterQueue[Row]) -> Counter[Row]:
    return Counter(item for record in await dlq.records() for item in record.items)


async def settled(service: RunningService) -> None:
    coordinator: WriteCoordinator[Row] = service.components.coordinator
    await asyncio.wait_for(coordinator.wait_idle(), 30)


async def test_replays_while_earlier_ones_are_in_flight_never_multiply_records(
    service: RunningService,
    poison: asyncpg.Connection[asyncpg.Record],
    database_url: str,
    tmp_path: Path,
) -> None:
    dlq = await seed(service)
    async with poison.transaction():
        # writes wait on this lock: every replay below answers with its bars in flight
        await poison.execute("LOCK TABLE bars IN ACCESS EXCLUSIVE MODE")
        first = await replay(service.client)
        assert first["pending"] is True
        again = [await replay(service.client) for _ in range(2)]
        again += await asyncio.gather(*(replay(service.client) for _ in range(3)))
        assert sum(int(str(r["items"])) for r in again) == 0  # nothing re-submitted twice
    await settled(service)

    # the cause is still there: the poison bars are back once each, with the new error
    counts = await dead_lettered(dlq)
    assert counts == Counter(BAD)
    assert all("test poison row" in r.error for r in await dlq.records())
    assert [r["symbol"] for r in await stored_bars(database_url)] == ["GOOD"] * len(GOOD)

    for _ in range(3):  # replaying with the cause still there changes nothing
        await asyncio.gather(replay(service.client), replay(service.client))
        await settled(service)
        assert await dead_lettered(dlq) == Counter(BAD)

    await poison.execute(_DROP_POISON_TRIGGER)
    result = await replay(service.client)
    await settled(service)
    assert (result["records"], result["items"]) == (len(BAD), len(BAD))
    assert await dlq.records() == []
    assert len(await stored_bars(database_url)) == len(GOOD) + len(BAD)
    assert not [name for name in os.listdir(tmp_path) if ".claimed-" in name]


async def dlq_summary(client: httpx.AsyncClient) -> tuple[int, int]:
    response = await client.get("/admin/dlq", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["records"], body["in_flight_records"]


async def test_get_counts_what_a_replay_holds_and_what_an_earlier_run_left_aside(
    service: RunningService, database_url: str, tmp_path: Path
) -> None:
    earlier_run = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    for item in GOOD[:3]:
        await earlier_run.save([item], "an earlier failure")
    await earlier_run.claim()  # its replay was killed: the records sit in a claimed file
    assert await dlq_summary(service.client) == (3, 0)

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE bars IN ACCESS EXCLUSIVE MODE")
            first = await replay(service.client)
            assert (first["records"], first["pending"]) == (3, True)
            assert await dlq_summary(service.client) == (0, 3)  # held, not gone
    finally:
        await conn.close()
    await settled(service)
    assert await dlq_summary(service.client) == (0, 0)
    assert len(await stored_bars(database_url)) == 3
