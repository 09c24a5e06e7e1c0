"""Readiness after a database outage: back within 2 s of the database answering,
whatever ``circuit_breaker.half_open_after_sec`` says.

The PostgreSQL here is the test's own (an embedded server in a folder of its own,
stopped and started by the test), never the machine's shared one."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from market_data_store.coordinator import WriteCoordinator
from market_data_store.storage import Row
from market_data_store.storage.embedded import EmbeddedPostgres
from tests.support.bars import rows
from tests.support.postgres import count_bars
from tests.support.service import running_service, service_settings
from tests.support.waits import until

BACK_WITHIN = 2.0  # seconds from the database answering to readiness 200


@pytest.fixture
async def owned_postgres() -> AsyncIterator[EmbeddedPostgres]:
    # a short path: the server's unix socket lives in it (at most 107 bytes)
    folder = Path(tempfile.mkdtemp(prefix="mds-pg-"))
    # the server may run as an unprivileged user of its own
    await asyncio.to_thread(folder.chmod, 0o755)
    pg = EmbeddedPostgres(folder / "data")
    await pg.start()
    try:
        yield pg
    finally:
        await pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def breaker_opened(coordinator: WriteCoordinator[Row]) -> None:
    """Wait (at most 10 s) until the failing writes opened the breaker."""
    await until(
        lambda: coordinator.breaker.state == "open",
        timeout=10,
        what="the breaker open after failing writes",
    )


async def readiness(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


async def poll_until(client: httpx.AsyncClient, code: int, limit: float) -> float:
    """Seconds until ``/readyz`` answers ``code``; fails after ``limit`` seconds."""

    async def answers() -> bool:
        return await readiness(client) == code

    return await until(answers, timeout=limit, what=f"/readyz {code}")


async def test_readiness_is_back_within_2s_of_the_database(
    owned_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    assert owned_postgres.uri is not None
    url = owned_postgres.uri
    settings = service_settings(
        url,
        str(tmp_path),
        # the old behaviour waited for this timer: ready again only after 30 s
        MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC="30",
        # slow regular checks, not the suite's fast ones: the failing interval does it
        MDS_DATABASE_HEALTH_INTERVAL="2",
        MDS_DATABASE_HEALTH_INTERVAL_FAILING="0.5",
        MDS_DATABASE_HEALTH_TIMEOUT="1",
    )
    async with running_service(settings) as svc:
        coordinator: WriteCoordinator[Row] = svc.components.coordinator
        assert await readiness(svc.client) == 200

        await owned_postgres.stop()
        await coordinator.submit_many(rows(200))  # accepted during the outage
        await poll_until(svc.client, 503, 10)
        await breaker_opened(coordinator)

        await owned_postgres.start()  # returns once the server accepts connections
        took = await poll_until(svc.client, 200, BACK_WITHIN)

        assert coordinator.breaker.state == "closed"
        await asyncio.wait_for(coordinator.wait_idle(), 10)
        assert await count_bars(url) == 200  # the trial and the rest landed; nothing lost
        assert took < BACK_WITHIN


async def test_readiness_is_back_after_an_outage_the_monitor_did_not_see(
    owned_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The breaker opened during a blip between two checks: the next check, which
    comes early because the breaker is open, lets the trial through."""
    assert owned_postgres.uri is not None
    url = owned_postgres.uri
    settings = service_settings(
        url,
        str(tmp_path),
        MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC="30",
        MDS_DATABASE_HEALTH_INTERVAL="60",  # the regular check would come far too late
        MDS_DATABASE_HEALTH_INTERVAL_FAILING="0.5",
        MDS_DATABASE_HEALTH_TIMEOUT="1",
    )
    async with running_service(settings) as svc:
        coordinator: WriteCoordinator[Row] = svc.components.coordinator
        await owned_postgres.stop()
        await coordinator.submit_many(rows(50))
        await breaker_opened(coordinator)
        await owned_postgres.start()
        took = await poll_until(svc.client, 200, BACK_WITHIN)
        await asyncio.wait_for(coordinator.wait_idle(), 10)
        assert await count_bars(url) == 50
        assert took < BACK_WITHIN


async def test_a_database_back_during_the_drain_gets_the_queue_written(
    owned_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Shutdown during an outage: the coordinator drains with the breaker open. The
    database monitor keeps watching until the drain is over, so a database that comes
    back meanwhile half-opens the breaker and the queue is written, not dead-lettered
    when the drain bound runs out."""
    assert owned_postgres.uri is not None
    url = owned_postgres.uri
    settings = service_settings(
        url,
        str(tmp_path),
        MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC="30",  # longer than the drain
        MDS_COORDINATOR_DRAIN_TIMEOUT="10",
        MDS_DATABASE_HEALTH_INTERVAL="1",
        MDS_DATABASE_HEALTH_INTERVAL_FAILING="0.2",
        MDS_DATABASE_HEALTH_TIMEOUT="0.5",
    )
    back: asyncio.Task[None] | None = None
    async with running_service(settings) as svc:
        coordinator: WriteCoordinator[Row] = svc.components.coordinator
        await owned_postgres.stop()
        await coordinator.submit_many(rows(30))
        await breaker_opened(coordinator)

        async def come_back() -> None:
            await until(lambda: coordinator.stopping, what="the shutdown's drain begun")
            await owned_postgres.start()

        back = asyncio.create_task(come_back())
        started = time.monotonic()
    drained_in = time.monotonic() - started
    await back
    assert await count_bars(url) == 30
    assert not (tmp_path / "dlq.ndjson").exists() or (tmp_path / "dlq.ndjson").stat().st_size == 0
    assert drained_in < 8, (
        f"the drain waited {drained_in:.1f}s: the breaker's timer, not the database"
    )
