"""Scenario 5: the Redis that carries feedback across replicas stops and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.support.bars import bars_body
from tests.support.process import serve, stop
from tests.support.redis_server import PrivateRedis, replica_env, unique_channel
from tests.support.reliability import (
    LevelRecorder,
    ProbeSampler,
    ScenarioReport,
    feedback_details,
    ms,
    percentile,
)
from tests.support.waits import until

SCENARIO = ScenarioReport(
    5,
    "Redis outage",
    "two replicas sharing feedback over a private redis-server (own port); it is stopped"
    " for 5 s while replica B ingests, then started again (empty)",
    "both replicas stay ready with probes fast (p99 < 50 ms) and ingest answered at once"
    " during the outage; both resubscribe; B's events after recovery reach A's SSE stream"
    " (soft, hard, ok in order)",
)
DOWN = 5.0


@pytest.mark.timeout(150)
def test_redis_outage(
    database_url: str, tmp_path: Path, private_redis: PrivateRedis, report: ScenarioReport
) -> None:
    channel = unique_channel()
    env_a, env_b = (
        replica_env(database_url, tmp_path, n, private_redis.url, channel) for n in "ab"
    )
    with serve(env_a, tmp_path) as (proc_a, a), serve(env_b, tmp_path) as (proc_b, b):

        async def scenario() -> dict[str, object]:
            halt = asyncio.Event()
            probes = [ProbeSampler(base, "/readyz", interval=0.05) for base in (a, b)]
            stream = LevelRecorder(a, params={"coordinator_id": "b/bars"})
            figures: dict[str, object] = {}
            async with (
                httpx.AsyncClient(base_url=a, timeout=10) as client_a,
                httpx.AsyncClient(base_url=b, timeout=10) as client_b,
            ):
                for client in (client_a, client_b):
                    await until_connected(client)
                listener = asyncio.create_task(stream.run())
                samplers = [asyncio.create_task(p.run(halt)) for p in probes]
                await asyncio.wait_for(stream.connected.wait(), 10)

                async def ingest_on_b(day: int) -> float:
                    started = time.monotonic()
                    response = await client_b.post("/v1/bars?wait=commit", json=bars_body(90, day))
                    assert response.status_code == 201, response.text
                    return time.monotonic() - started

                before = time.monotonic()
                await ingest_on_b(0)
                await until(
                    lambda: stream.between(before)[-3:] == ["soft", "hard", "ok"],
                    timeout=10,
                    what="B's events on A",
                )

                down_at = time.monotonic()
                await asyncio.to_thread(private_redis.stop)
                figures["noticed down (s)"] = round(
                    await until_state(client_a, "disconnected", 10), 2
                )
                ingest_during = [await ingest_on_b(day) for day in (1, 2, 3)]
                await asyncio.sleep(max(0.0, DOWN - (time.monotonic() - down_at)))
                up_at = time.monotonic()
                await asyncio.to_thread(private_redis.start)
                resubscribed = 0.0
                for client in (client_a, client_b):
                    await until_state(client, "connected", 20)
                    resubscribed = time.monotonic() - up_at
                await asyncio.sleep(0.5)  # the bridge's re-seed of B's latest event
                after = time.monotonic()
                await ingest_on_b(4)
                await until(
                    lambda: stream.between(after)[-3:] == ["soft", "hard", "ok"],
                    timeout=10,
                    what="recovered",
                )
                delivered = stream.levels[-1][0] - after
                halt.set()
                await asyncio.gather(*samplers)
                await stream.stop(listener)
            latencies = probes[0].latencies() + probes[1].latencies()
            during = probes[0].latencies(down_at, up_at) + probes[1].latencies(down_at, up_at)
            figures.update(
                {
                    "ingest latency during the outage, max (ms)": ms(max(ingest_during)),
                    "resubscribed after restart (s)": round(resubscribed, 2),
                    "events after recovery on A": stream.between(after),
                    "B ingest to `ok` on A after recovery (s)": round(delivered, 2),
                    "probe p99 during the outage (ms)": ms(percentile(during, 0.99)),
                    "probe max (ms)": ms(max(latencies)),
                    "readiness answers": sorted({p.status for s in probes for p in s.probes}),
                }
            )
            figures["_during"] = during
            figures["_ingest"] = ingest_during
            figures["_after"] = stream.between(after)
            return figures

        figures = asyncio.run(scenario())
        outputs = [stop(proc) for proc in (proc_a, proc_b)]

    during = figures.pop("_during")
    ingest_during = figures.pop("_ingest")
    after = figures.pop("_after")
    report.figures.update(figures)
    assert isinstance(during, list)
    assert isinstance(ingest_during, list)
    assert figures["readiness answers"] == [200]
    assert percentile(during, 0.99) < 0.05
    assert max(ingest_during) < 2.0, ingest_during
    assert after == ["soft", "hard", "ok"], after
    assert all("redis feedback bridge subscribed" in o for o in outputs)


async def until_state(client: httpx.AsyncClient, state: str, timeout: float) -> float:
    """Seconds until the feedback's redis state on ``client``'s replica is ``state``."""

    async def reached() -> bool:
        return (await feedback_details(client))["redis"] == state

    return await until(reached, timeout=timeout, what=f"redis {state}", interval=0.05)


async def until_connected(client: httpx.AsyncClient) -> None:
    await until_state(client, "connected", 15)
