"""Scenario 10: a hash of 300,000 fields among the replicas' ``<channel>:latest:*`` hashes
(anyone who can write to Redis can leave one). Before, every re-read of the bridge timed
out on it (health ``disconnected`` for as long as the key lived, RSS 160 -> 616 MB). Now
it is refused unread (larger than a replica's 1,000 events could be: ``MEMORY USAGE``),
as a hash of more than 1,000 small fields would be read only in part."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import encode_event
from market_data_store.feedback.redis_bridge import MAX_FIELDS_PER_KEY, latest_key
from tests.support.process import serve, stop
from tests.support.redis_server import PrivateRedis, replica_env, unique_channel
from tests.support.reliability import (
    ProbeSampler,
    ScenarioReport,
    feedback_details,
    ms,
    percentile,
    rss_mb,
)
from tests.support.waits import until

FIELDS = 300_000
WATCH = 32.0  # seconds: the start's read and three re-reads (one every 10 s)
RSS_BOUND_MB = 50.0
SCENARIO = ScenarioReport(
    10,
    "Large Redis hash",
    f"a replica starts with a hash of {FIELDS:,} fields under <channel>:latest:big on its"
    " private redis-server, next to a good replica's hash; watched for"
    f" {WATCH:.0f} s (three re-reads)",
    "the bridge connects and stays connected; the big hash refused unread (larger than"
    " 1,000 events can be), at most 1,000 of its fields counted per read in any case; the"
    " good replica's coordinator known; /healthz p99 < 50 ms; RSS grows"
    f" < {RSS_BOUND_MB:.0f} MiB",
)


def fill(url: str, channel: str) -> None:
    big = encode_event(FeedbackEvent.create("big/bars", 1, 10, BackpressureLevel.soft))
    good = FeedbackEvent.create("good-1/bars", 5, 10, BackpressureLevel.soft, "queue_rising")
    with Redis.from_url(url) as client:
        for at in range(0, FIELDS, 10_000):
            fields = {f"f{i}": big for i in range(at, min(FIELDS, at + 10_000))}
            client.hset(latest_key(channel, "big"), mapping=fields)
        client.hset(latest_key(channel, "good-1"), "good-1/bars", encode_event(good))


def received(metrics: str) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "mds_feedback_redis_received_total"
    }


@pytest.mark.timeout(150)
def test_large_redis_hash(
    database_url: str, tmp_path: Path, private_redis: PrivateRedis, report: ScenarioReport
) -> None:
    channel = unique_channel()
    started = time.monotonic()
    fill(private_redis.url, channel)
    report.figures["hash filled (s)"] = round(time.monotonic() - started, 1)
    env = replica_env(database_url, tmp_path, "a", private_redis.url, channel)
    with serve(env, tmp_path) as (proc, base):
        rss_start = rss_mb(proc.pid)

        async def scenario() -> tuple[list[str], list[float]]:
            halt = asyncio.Event()
            probe = ProbeSampler(base, "/healthz", interval=0.02)
            states: list[str] = []
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:

                async def connected() -> bool:
                    return (await feedback_details(client))["redis"] == "connected"

                report.figures["connected after start (s)"] = round(
                    await until(connected, timeout=15, what="redis connected"), 2
                )
                sampler = asyncio.create_task(probe.run(halt))
                watch_end = time.monotonic() + WATCH
                while time.monotonic() < watch_end:
                    states.append((await feedback_details(client))["redis"])
                    await asyncio.sleep(0.25)
                halt.set()
                await sampler
                state = (await client.get("/v1/feedback/state")).json()["coordinators"]
                counts = received((await client.get("/metrics")).text)
            report.figures.update(
                {
                    "redis state samples": {s: states.count(s) for s in sorted(set(states))},
                    "coordinators known": sorted(c["coordinator_id"] for c in state),
                    "messages read (accepted, rejected)": [
                        counts.get("accepted"),
                        counts.get("rejected"),
                    ],
                    "/healthz p50 (ms)": ms(percentile(probe.latencies(), 0.5)),
                    "/healthz p99 (ms)": ms(percentile(probe.latencies(), 0.99)),
                    "/healthz max (ms)": ms(max(probe.latencies())),
                    "/healthz probes": len(probe.probes),
                }
            )
            return states, probe.latencies()

        states, latencies = asyncio.run(scenario())
        rss_end = rss_mb(proc.pid)
        report.figures["RSS start, end (MiB)"] = [round(rss_start), round(rss_end)]
        output = stop(proc)

    assert set(states) == {"connected"}, states
    assert "good-1/bars" in report.figures["coordinators known"]
    accepted, reads = report.figures["messages read (accepted, rejected)"]
    assert reads >= 3  # the big hash is refused once per read: at the start, every 10 s
    assert accepted <= reads * (MAX_FIELDS_PER_KEY + 1) + 10  # + the replica's own echoes
    assert percentile(latencies, 0.99) < 0.05
    assert rss_end - rss_start < RSS_BOUND_MB
    assert "bytes (at most 4224000 read)" in output  # refused by its size, unread
    assert "big/bars" not in report.figures["coordinators known"]
