"""The service's bars coordinator writing to a real PostgreSQL through outages and bad rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from market_data_store.coordinator import DeadLetterQueue, WriteCoordinator
from market_data_store.storage import BarRow, Row
from tests.support.bars import rows
from tests.support.postgres import count_bars
from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

# Rows here have their number as volume (``volume=str``): the poison triggers below pick
# a row by it, and the dead-lettered rows are told apart by it.


@pytest.fixture
async def service(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        proxy.url_for(database_url), str(tmp_path), MDS_COORDINATOR_BATCH_SIZE="100"
    )
    async with running_service(settings) as svc:
        yield svc


async def test_accepted_rows_survive_a_database_outage(
    service: RunningService, proxy: TcpProxy, database_url: str
) -> None:
    coordinator: WriteCoordinator[Row] = service.components.coordinator
    await coordinator.submit_many(rows(500, volume=str))
    await asyncio.wait_for(coordinator.wait_idle(), 30)
    assert await count_bars(database_url) == 500

    proxy.cut()
    await coordinator.submit_many(
        rows(1500, 500, volume=str)
    )  # accepted while the database is gone
    await asyncio.sleep(0.5)
    assert coordinator.queue.unfinished > 0  # waiting, not dropped
    assert coordinator.health().workers_alive == 4
    assert coordinator.stats.dead_lettered == 0

    proxy.restore()
    await asyncio.wait_for(coordinator.wait_idle(), 30)
    assert await count_bars(database_url) == 2000
    assert coordinator.stats.dead_lettered == 0
    assert coordinator.stats.write_errors  # the outage was seen, and retried through


async def test_bad_rows_are_dead_lettered_good_rows_written(
    service: RunningService, database_url: str, tmp_path: Path
) -> None:
    coordinator: WriteCoordinator[Row] = service.components.coordinator
    await coordinator.submit_many(rows(300, bad={17, 250}, volume=str))
    await asyncio.wait_for(coordinator.wait_idle(), 30)
    assert await count_bars(database_url) == 298
    records = await DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson").replay()
    poisoned = sorted(int(r.items[0].volume) for r in records)
    assert poisoned == [17, 250]
    assert all("InvalidTextRepresentation" in r.error for r in records)
    assert isinstance(records[0].items[0], BarRow)
    assert records[0].items[0].ts.tzinfo is not None


@pytest.mark.parametrize(
    "raise_clause",
    [
        "RAISE EXCEPTION 'volume % refused by a trigger', NEW.volume",  # P0001
        "ASSERT NEW.volume <> 17, 'assert failed'",  # P0004
    ],
)
async def test_rows_a_trigger_refuses_are_dead_lettered_not_retried_forever(
    service: RunningService, database_url: str, tmp_path: Path, raise_clause: str
) -> None:
    """A trigger's own error (PL/pgSQL, SQLSTATE class P0) is about the row, as a
    CHECK violation is: the row is isolated and dead-lettered with that error, the
    rest land, and the breaker stays closed (retrying it would hold the writers and
    readiness for good)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"""
            CREATE FUNCTION refuse_17() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.volume = 17 THEN {raise_clause}; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_17 BEFORE INSERT OR UPDATE ON bars
                FOR EACH ROW EXECUTE FUNCTION refuse_17();
            """
        )
        coordinator: WriteCoordinator[Row] = service.components.coordinator
        await coordinator.submit_many(rows(100, volume=str))
        await asyncio.wait_for(coordinator.wait_idle(), 30)
        assert await count_bars(database_url) == 99
        (record,) = await DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson").records()
        assert [item.volume for item in record.items] == ["17"]
        assert coordinator.breaker.state == "closed"

        async def ready() -> bool:
            return (await service.client.get("/readyz")).status_code == 200

        await until(ready, what="/readyz answering 200")  # one check may miss its 0.1 s
    finally:
        await conn.close()
