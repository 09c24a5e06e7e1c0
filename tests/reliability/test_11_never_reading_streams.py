"""Scenario 11: streams that never read, over a large snapshot of another replica's
coordinators (issue 18: 1,000 remote coordinators made 500 such streams cost 3.3 GB)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import encode_event
from market_data_store.feedback.redis_bridge import latest_key
from tests.support.process import serve
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

REMOTE = 1000  # coordinators of another replica: the snapshot's bound
REASON = 256  # characters of each one's reason: the most a remote event may carry
STREAMS = 500
PER_STREAM_BOUND_KIB = 256.0  # server RSS per never-reading stream (main: ~900 KiB here)
PROBE_P99_BOUND = 0.05  # seconds, /healthz while the streams are held
SCENARIO = ScenarioReport(
    11,
    "Never-reading streams, large snapshot",
    f"another replica publishes {REMOTE:,} coordinators over a private redis-server (a"
    f" {REASON}-character reason each); {STREAMS} streams ask for the snapshot and never"
    " read a byte (held: send_timeout 60 s)",
    f"server RSS per never-reading stream < {PER_STREAM_BOUND_KIB:.0f} KiB (the snapshot is"
    f" shared and sent in 16 KiB chunks, not copied per stream); /healthz p99 <"
    f" {PROBE_P99_BOUND * 1000:.0f} ms while they are held",
)


async def remote_replica(url: str, channel: str) -> None:
    """Replica ``atk``'s latest events: in its hash (re-read every 10 s: they stay alive)
    and published once."""
    client = Redis.from_url(url)
    try:
        bodies = {
            cid: encode_event(
                FeedbackEvent.create(cid, 80, 100, BackpressureLevel.hard, "r" * REASON)
            )
            for cid in (f"atk/c{i:04d}" for i in range(REMOTE))
        }
        key = latest_key(channel, "atk")
        await client.hset(key, mapping=bodies)  # type: ignore[arg-type]
        await client.expire(key, 600)
        async with client.pipeline(transaction=False) as pipe:
            for body in bodies.values():
                pipe.publish(channel, body)
            await pipe.execute()
    finally:
        await client.aclose()


def never_reading(port: int) -> socket.socket:
    sock = socket.socket()
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
    return sock


@pytest.mark.timeout(180)
def test_never_reading_streams_over_a_large_snapshot(
    database_url: str, tmp_path: Path, private_redis: PrivateRedis, report: ScenarioReport
) -> None:
    channel = unique_channel()
    env = {
        **replica_env(database_url, tmp_path, "a", private_redis.url, channel),
        "MDS_FEEDBACK_SSE_SEND_TIMEOUT": "60",
        # every stream comes from loopback: one client address for the cap
        "MDS_FEEDBACK_SSE_MAX_STREAMS_PER_CLIENT": str(STREAMS + 10),
    }
    with serve(env, tmp_path) as (proc, base):
        port = int(base.rsplit(":", 1)[1])

        async def scenario() -> dict[str, float]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                await until(lambda: _redis_connected(client), timeout=30, what="redis connected")
                await remote_replica(private_redis.url, channel)

                async def snapshot_complete() -> bool:
                    state = (await client.get("/v1/feedback/state")).json()
                    return len(state["coordinators"]) == REMOTE + 1

                await until(snapshot_complete, timeout=30, what="the snapshot", interval=0.2)
                snapshot = len((await client.get("/v1/feedback/state")).content)
                idle = rss_mb(proc.pid)
                sockets = []
                sampler = ProbeSampler(base, "/healthz", interval=0.05)
                stop = asyncio.Event()
                try:
                    for _ in range(STREAMS):
                        sockets.append(await asyncio.to_thread(never_reading, port))

                    async def all_open() -> bool:
                        return int((await feedback_details(client))["subscribers"]) == STREAMS

                    await until(all_open, timeout=60, what="every stream open", interval=0.2)
                    await asyncio.sleep(2)  # each has sent what its buffers take
                    held = rss_mb(proc.pid)
                    probing = asyncio.create_task(sampler.run(stop))
                    await asyncio.sleep(5)
                    stop.set()
                    await probing
                    still = int((await feedback_details(client))["subscribers"])
                    held = max(held, rss_mb(proc.pid))
                finally:
                    for sock in sockets:
                        sock.close()
            latencies = sampler.latencies()
            return {
                "snapshot": snapshot,
                "idle": idle,
                "held": held,
                "still": still,
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
                "probes": len(latencies),
                "failed": sum(1 for p in sampler.probes if p.status != 200),
            }

        started = time.monotonic()
        o = asyncio.run(scenario())
        took = time.monotonic() - started

    per_stream_kib = (o["held"] - o["idle"]) * 1024 / STREAMS
    report.figures.update(
        {
            "snapshot (bytes)": int(o["snapshot"]),
            "never-reading streams held": int(o["still"]),
            "server RSS idle / with the streams (MiB)": f"{o['idle']:.0f} / {o['held']:.0f}",
            "server RSS per never-reading stream (KiB)": round(per_stream_kib, 1),
            "/healthz p50 / p99 while held (ms)": f"{ms(o['p50'])} / {ms(o['p99'])}",
            "scenario (s)": round(took, 1),
        }
    )
    assert o["still"] == STREAMS  # held all along: the figure is theirs
    assert per_stream_kib < PER_STREAM_BOUND_KIB, per_stream_kib
    assert o["failed"] == 0
    assert o["probes"] > 20
    assert o["p99"] < PROBE_P99_BOUND, ms(o["p99"])


async def _redis_connected(client: httpx.AsyncClient) -> bool:
    return (await feedback_details(client))["redis"] == "connected"
