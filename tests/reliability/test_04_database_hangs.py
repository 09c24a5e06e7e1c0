"""Scenario 4: the database accepts connections but answers nothing, then resumes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import serve, stop
from tests.support.proxy_thread import ProxyThread
from tests.support.reliability import (
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
from tests.support.tcp_proxy import upstream_of
from tests.support.waits import until

SCENARIO = ScenarioReport(
    4,
    "Database hangs",
    "a TCP proxy between service and PostgreSQL holds all traffic for 8 s (connections"
    " stay open, nothing comes back) under 2 ingest clients, then forwards again",
    "liveness and readiness probes answer in milliseconds throughout (p99 < 50 ms, none"
    " over 500 ms); readiness 503 within 2 s; writes back off (breaker opens, producers"
    " get 503 + Retry-After); every accepted bar stored with its values after it resumes",
)
HANG = 8.0


@pytest.mark.timeout(150)
def test_database_hangs(database_url: str, tmp_path: Path, report: ScenarioReport) -> None:
    with ProxyThread(upstream_of(database_url)) as proxy:
        env = {
            "DATABASE_URL": proxy.url_for(database_url),
            "MDS_SERVER_INSTANCE_ID": "rel-4",
            "MDS_DATABASE_HEALTH_INTERVAL": "0.2",
            "MDS_DATABASE_HEALTH_TIMEOUT": "0.2",
            "MDS_DATABASE_CONNECT_TIMEOUT": "1",
            "MDS_DATABASE_COMMAND_TIMEOUT": "1",
            "MDS_COORDINATOR_CAPACITY": "3000",
            "MDS_COORDINATOR_BATCH_SIZE": "200",
            "MDS_COORDINATOR_FLUSH_INTERVAL": "0.05",
            "MDS_COORDINATOR_SUBMIT_TIMEOUT": "1",
            "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
            "MDS_RETRY_INITIAL_BACKOFF_MS": "50",
            "MDS_RETRY_MAX_BACKOFF_MS": "500",
            "MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC": "3",
        }
        with serve(env, tmp_path) as (proc, base):

            async def scenario() -> tuple[list[Producer], ProbeSampler, ProbeSampler, float, float]:
                halt, halt_probes = asyncio.Event(), asyncio.Event()
                ready = ProbeSampler(base, "/readyz", interval=0.05)
                live = ProbeSampler(base, "/healthz", interval=0.05)
                async with httpx.AsyncClient(base_url=base) as client:
                    producers = [Producer(client, f"HANG{i}", batch=200, pace=0.1) for i in (0, 1)]
                    probes = [asyncio.create_task(s.run(halt_probes)) for s in (ready, live)]
                    tasks = [asyncio.create_task(p.run(halt)) for p in producers]
                    await asyncio.sleep(2)
                    hung_at = time.monotonic()
                    proxy.hang()
                    await asyncio.sleep(HANG)
                    proxy.restore()
                    resumed_at = time.monotonic()
                    await until(
                        lambda: ready.first(200, resumed_at) is not None,
                        timeout=40,
                        what="ready again",
                    )
                    await asyncio.sleep(2)
                    halt.set()
                    await asyncio.gather(*tasks)
                    await until_queue_empty(client)
                    halt_probes.set()
                    await asyncio.gather(*probes)
                return producers, ready, live, hung_at, resumed_at

            producers, ready, live, hung_at, resumed_at = asyncio.run(scenario())
            output = stop(proc)

    accepted = accepted_of(producers)
    stored = asyncio.run(stored_values(database_url))
    statuses = statuses_of(producers)
    during = ready.latencies(hung_at, resumed_at) + live.latencies(hung_at, resumed_at)
    first_503 = ready.first(503, hung_at)
    first_200 = ready.first(200, resumed_at)
    circuit = {p.circuit_state for p in ready.probes if hung_at <= p.sent}
    report.figures.update(
        {
            "bars accepted": len(accepted),
            "bars stored": len(stored),
            "tracebacks logged": output.count("Traceback"),
            "answers 202 / 503": f"{statuses[202]} / {statuses[503]}",
            "probes during the hang": len(during),
            "probe p99 during the hang (ms)": ms(percentile(during, 0.99)),
            "probe max during the hang (ms)": ms(max(during, default=0.0)),
            "time to readiness 503 (s)": round(first_503.sent - hung_at, 2) if first_503 else None,
            "time back to readiness 200 (s)": round(first_200.sent - resumed_at, 2)
            if first_200
            else None,
            "breaker states seen": sorted(s for s in circuit if s),
        }
    )

    assert not [e for p in producers for e in p.errors]
    assert set(statuses) <= {202, 503}, statuses
    assert all(len(p.probes) and all(x.status for x in p.probes) for p in (ready, live))
    assert percentile(during, 0.99) < 0.05, sorted(during)[-10:]
    assert max(during) < 0.5
    assert all(x.status == 200 for x in live.probes)  # liveness never fails on a dependency
    assert first_503 is not None
    assert first_503.sent - hung_at < 2.0
    assert "open" in circuit, "writes did not back off: the breaker never opened"
    assert statuses[503] >= 1, "producers were never told to wait"
    assert all(ra and ra.isdigit() for p in producers for ra in p.retry_after)
    assert accepted == stored, diff(accepted, stored)
