"""Scenario 1: the database stops for 10 s under sustained ingest, then comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.owned_postgres import OwnedPostgres
from tests.support.process import serve, stop
from tests.support.reliability import (
    LevelRecorder,
    ProbeSampler,
    Producer,
    ScenarioReport,
    accepted_of,
    diff,
    ms,
    percentile,
    statuses_of,
    stored_values,
    until_queue_empty,
)
from tests.support.waits import until

SCENARIO = ScenarioReport(
    1,
    "Database outage during ingest",
    "PostgreSQL (owned by the test) stopped for 10 s under 4 ingest clients, then started"
    " again (same data, same port)",
    "every bar answered 201/202 stored with its exact values; readiness 503 within 2 s of"
    " the outage and 200 within 2 s of recovery; SSE `hard` during, `ok` after; breaker"
    " opened and closed; no worker died; producers got only 503 + Retry-After",
)
CLIENTS = 4
OUTAGE = 10.0
WORKERS = 4


@pytest.fixture
def owned_pg(tmp_path: Path) -> Iterator[OwnedPostgres]:
    pg = OwnedPostgres(tmp_path / "pg")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


async def create_database(pg: OwnedPostgres) -> str:
    conn = await asyncpg.connect(pg.url())
    try:
        await conn.execute("CREATE DATABASE mds")
    finally:
        await conn.close()
    return pg.url("mds")


@pytest.mark.timeout(180)
def test_database_outage_during_ingest(
    owned_pg: OwnedPostgres, tmp_path: Path, report: ScenarioReport
) -> None:
    url = asyncio.run(create_database(owned_pg))
    env = {
        "DATABASE_URL": url,
        "MDS_SERVER_INSTANCE_ID": "rel-1",
        "MDS_DATABASE_HEALTH_INTERVAL": "0.2",
        "MDS_DATABASE_HEALTH_TIMEOUT": "0.2",
        "MDS_DATABASE_CONNECT_TIMEOUT": "1",
        "MDS_COORDINATOR_WORKERS": str(WORKERS),
        "MDS_COORDINATOR_CAPACITY": "5000",
        "MDS_COORDINATOR_BATCH_SIZE": "500",
        "MDS_COORDINATOR_FLUSH_INTERVAL": "0.05",
        "MDS_COORDINATOR_SUBMIT_TIMEOUT": "1",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
        "MDS_RETRY_INITIAL_BACKOFF_MS": "50",
        "MDS_RETRY_MAX_BACKOFF_MS": "500",
        # the shipped breaker timer (30 s): recovery must not wait for it
        "MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC": "30",
    }
    with serve(env, tmp_path) as (proc, base):

        async def scenario() -> tuple[
            list[Producer], ProbeSampler, LevelRecorder, float, float, float
        ]:
            halt, halt_samplers = asyncio.Event(), asyncio.Event()
            probes = ProbeSampler(base, "/readyz", interval=0.05)
            levels = LevelRecorder(base)
            async with httpx.AsyncClient(base_url=base) as client:
                producers = [
                    Producer(client, f"OUT{i}", batch=200, pace=0.1) for i in range(CLIENTS)
                ]
                sampler = asyncio.create_task(probes.run(halt_samplers))
                listener = asyncio.create_task(levels.run())
                await asyncio.wait_for(levels.connected.wait(), 10)
                tasks = [asyncio.create_task(p.run(halt)) for p in producers]
                await asyncio.sleep(3)
                outage_at = time.monotonic()
                await asyncio.to_thread(owned_pg.stop)
                await asyncio.sleep(OUTAGE)
                # pg_ctl -w returns once it has seen the server accept connections: the
                # service may have seen it first, written its backlog and turned `ok`
                # before then. "After the outage" starts when the restart does.
                restart_at = time.monotonic()
                await asyncio.to_thread(owned_pg.start)
                back_at = time.monotonic()
                await until(
                    lambda: probes.first(200, restart_at) is not None,
                    timeout=45,
                    what="readiness 200 again",
                )
                await asyncio.sleep(3)
                halt.set()
                await asyncio.gather(*tasks)
                # everything accepted is written before the service is stopped
                await until_queue_empty(client)
                halt_samplers.set()
                await sampler
                await levels.stop(listener)
            return producers, probes, levels, outage_at, restart_at, back_at

        producers, probes, levels, outage_at, restart_at, back_at = asyncio.run(scenario())
        output = stop(proc)

    accepted = accepted_of(producers)
    stored = asyncio.run(stored_values(url))
    statuses = statuses_of(producers)
    first_503 = probes.first(503, outage_at)
    first_200 = probes.first(200, restart_at)
    circuit = [p.circuit_state for p in probes.probes if p.circuit_state]
    workers = {p.workers_alive for p in probes.probes if p.workers_alive}
    during = levels.between(outage_at, restart_at)
    after = levels.between(restart_at)
    report.figures.update(
        {
            "bars accepted": len(accepted),
            "bars stored": len(stored),
            "tracebacks logged": output.count("Traceback"),
            "answers 202": statuses[202],
            "answers 503": statuses[503],
            "other answers": sum(n for s, n in statuses.items() if s not in (201, 202, 503)),
            "time to readiness 503 (s)": round(first_503.sent - outage_at, 2)
            if first_503
            else None,
            "time back to readiness 200 (s)": round(first_200.sent - back_at, 2)
            if first_200
            else None,
            "pg_ctl start took (s)": round(back_at - restart_at, 2),
            "breaker states seen": sorted(set(circuit)),
            "SSE levels during outage": sorted(set(during)),
            "SSE last level": levels.levels[-1][1] if levels.levels else None,
            "readiness probe p99 (ms)": ms(percentile(probes.latencies(), 0.99)),
        }
    )

    assert not [e for p in producers for e in p.errors], [e for p in producers for e in p.errors]
    assert set(statuses) <= {201, 202, 503}, statuses
    assert statuses[503] >= 1, "producers were never told to wait during the outage"
    assert all(
        ra is not None and ra.isdigit() and int(ra) >= 1 for p in producers for ra in p.retry_after
    )
    assert accepted == stored, diff(accepted, stored)
    assert first_503 is not None
    assert first_503.sent - outage_at < 2.0, first_503
    assert first_200 is not None
    assert first_200.sent - back_at < 2.0, (
        f"readiness 200 only {first_200.sent - back_at:.1f} s after the database answered"
    )
    assert "open" in circuit, "the breaker never opened"
    assert circuit[-1] == "closed"
    assert workers == {str(WORKERS)}, f"workers alive seen: {workers}"
    assert "hard" in during, levels.levels
    assert "ok" in after, levels.levels
    assert levels.levels[-1][1] == "ok", levels.levels
