"""Feedback across replicas over a real Redis: publisher, bridge, two service processes,
and a Redis that is stopped and started again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent
from redis.asyncio import Redis

from market_data_store.contracts import FeedbackPublisher
from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import FeedbackFanout, RedisFeedbackBridge, RedisFeedbackPublisher
from tests.support.bars import bars_body
from tests.support.process import serve, stop
from tests.support.redis_server import PrivateRedis, replica_env, unique_channel
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until, until_sync

HARD, SOFT, OK = BackpressureLevel.hard, BackpressureLevel.soft, BackpressureLevel.ok
REPLICAS = 15.0  # seconds to wait on replicas, which are processes of their own


def test_publisher_is_a_core_feedback_publisher() -> None:
    publisher = RedisFeedbackPublisher("redis://127.0.0.1:1/0", "c", instance_id="a", latest=list)
    assert isinstance(publisher, FeedbackPublisher)


async def test_events_of_one_replica_reach_the_other_and_not_themselves(redis_url: str) -> None:
    url, channel = redis_url, unique_channel()
    here, there = FeedbackFanout(), FeedbackFanout()
    here.publish(FeedbackEvent.create("a/bars", 0, 100, OK))
    publisher = RedisFeedbackPublisher(
        url, channel, instance_id="a", latest=here.local_events, timeout=1
    )
    bridges = [
        RedisFeedbackBridge(url, channel, f, instance_id=name, timeout=1)
        for f, name in ((here, "a"), (there, "z"))
    ]
    try:
        await publisher.start()
        await until(lambda: publisher.connected)  # writes the latest events (seed) first
        for bridge in bridges:
            await bridge.start()
        await until(lambda: all(b.connected for b in bridges))
        # a bridge started after the event learns it from the replica's hash
        await until(lambda: [f.coord_id for f in there.snapshot()] == ["a/bars"])
        hard = FeedbackEvent.create("a/bars", 90, 100, HARD, "queue_full")
        await publisher.publish(hard)
        await until(lambda: there.snapshot()[0].event.level is HARD)
    finally:
        for bridge in bridges:
            await bridge.stop()
        await publisher.stop()
    received = there.snapshot()[0]
    assert received.event == hard
    CoreFeedbackEvent.model_validate_json(received.data)
    assert here.stats.published_remote == 0  # its own events came back and were ignored
    assert publisher.stats.sent == 1


async def test_garbage_on_the_channel_is_counted_and_ignored(redis_url: str) -> None:
    url, channel = redis_url, unique_channel()
    fanout = FeedbackFanout()
    bridge = RedisFeedbackBridge(url, channel, fanout, instance_id="z", timeout=1)
    client = Redis.from_url(url)
    good = FeedbackEvent.create("b/bars", 1, 10, SOFT)
    poison = [
        b"not json",
        b'{"coordinator_id": "x"}',
        b"x" * 10_000,
        good.model_dump_json().replace(str(good.ts), "1e400").encode(),  # inf
        good.model_dump_json().replace(str(good.ts), "4102444800.0").encode(),  # 2100
        good.model_copy(update={"coordinator_id": "b\x00"}).model_dump_json().encode(),
    ]
    try:
        await client.set(f"{channel}:latest:junk", "not a hash")  # must not break seeding
        await bridge.start()
        await until(lambda: bridge.connected)
        for junk in poison:
            await client.publish(channel, junk)
        await client.publish(channel, good.model_dump_json())
        await until(lambda: bridge.received == len(poison) + 2)  # + the stray key
    finally:
        await bridge.stop()
        await client.delete(f"{channel}:latest:junk")
        await client.aclose()
    assert bridge.rejected == len(poison) + 1  # and the stray key
    assert [f.event for f in fanout.snapshot()] == [good]  # later events are not hidden


async def test_a_silently_dead_subscription_is_noticed_and_renewed(redis_url: str) -> None:
    """Redis stops answering on an open connection (no error, no close): the bridge
    notices within its timeout, and subscribes again once Redis answers."""
    url, channel = redis_url, unique_channel()
    parts = urlsplit(url)
    proxy = await TcpProxy((parts.hostname or "127.0.0.1", parts.port or 6379)).start()
    fanout = FeedbackFanout()
    bridge = RedisFeedbackBridge(
        f"redis://127.0.0.1:{proxy.port}{parts.path}", channel, fanout, instance_id="z", timeout=0.5
    )
    client = Redis.from_url(url)
    try:
        await bridge.start()
        await until(lambda: bridge.connected)
        proxy.hang()
        await until(lambda: not bridge.connected, timeout=5)
        proxy.restore()
        await until(lambda: bridge.connected, timeout=10)
        event = FeedbackEvent.create("c/bars", 5, 10, HARD)
        await client.publish(channel, event.model_dump_json())
        await until(lambda: [f.event for f in fanout.snapshot()] == [event])
    finally:
        await bridge.stop()
        await proxy.close()
        await client.aclose()


# -- two service processes -------------------------------------------------------


def levels_of(base: str, coordinator: str) -> str | None:
    state = httpx.get(f"{base}/v1/feedback/state", timeout=2).json()
    found = [c["level"] for c in state["coordinators"] if c["coordinator_id"] == coordinator]
    return found[0] if found else None


def feedback_health(base: str) -> dict[str, str]:
    body = httpx.get(f"{base}/healthz", timeout=2).json()
    (component,) = [c for c in body["components"] if c["name"] == "feedback"]
    return {"state": component["state"], **component["details"]}


def levels_after_snapshot(
    base: str, coordinator: str, n: int, produce: Callable[[], None]
) -> list[str]:
    """Levels of the next ``n`` events of ``coordinator`` on replica ``base``'s stream:
    the snapshot (its latest event) is read first, then ``produce`` makes events."""
    levels: list[str] = []
    params = {"coordinator_id": coordinator}
    with httpx.stream("GET", f"{base}/v1/feedback/stream", params=params, timeout=15) as response:
        data = None
        snapshot_read = False
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and data is not None:
                event = CoreFeedbackEvent.model_validate_json(data)
                data = None
                assert event.coordinator_id == coordinator
                if not snapshot_read:
                    snapshot_read = True
                    produce()
                    continue
                levels.append(event.level.value)
                if len(levels) == n:
                    return levels
    raise AssertionError(f"stream ended after {levels}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path, password="hunter2")  # must never be printed
    redis.start()
    yield redis
    redis.stop()


def test_two_replicas_see_each_other_and_survive_a_redis_restart(
    database_url: str, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    channel = unique_channel()
    env_a, env_b = (
        replica_env(database_url, tmp_path, n, private_redis.url, channel) for n in "ab"
    )
    with serve(env_a, tmp_path) as (proc_a, a), serve(env_b, tmp_path) as (proc_b, b):
        until_sync(lambda: feedback_health(a)["redis"] == "connected", timeout=REPLICAS)
        until_sync(lambda: feedback_health(b)["redis"] == "connected", timeout=REPLICAS)
        # each replica knows the other's coordinator (from its hash or its start event)
        until_sync(
            lambda: levels_of(a, "b/bars") == "ok" and levels_of(b, "a/bars") == "ok",
            timeout=REPLICAS,
        )

        def ingest_on_b(day: int) -> None:
            response = httpx.post(f"{b}/v1/bars?wait=commit", json=bars_body(90, day), timeout=10)
            assert response.status_code == 201

        assert levels_after_snapshot(a, "b/bars", 3, lambda: ingest_on_b(0)) == [
            "soft", "hard", "ok",
        ]  # fmt: skip

        private_redis.stop()
        until_sync(lambda: feedback_health(a)["redis"] == "disconnected", timeout=REPLICAS)
        until_sync(lambda: feedback_health(b)["state"] == "degraded", timeout=REPLICAS)
        # the service keeps serving: ingest, probes and the local stream do not wait on Redis
        started = time.monotonic()
        ingest_on_b(1)
        assert time.monotonic() - started < 5
        assert httpx.get(f"{a}/readyz", timeout=2).status_code == 200
        health = feedback_health(a)
        assert health["redis_error"] in {"unreachable", "timeout", "error"}  # a category
        assert "redis_error_detail" not in health  # the error's type: /admin/health only

        private_redis.start()  # same port, empty: nothing of before survived
        until_sync(lambda: feedback_health(a)["redis"] == "connected", timeout=REPLICAS)
        until_sync(lambda: feedback_health(b)["redis"] == "connected", timeout=REPLICAS)
        assert levels_after_snapshot(a, "b/bars", 3, lambda: ingest_on_b(2)) == [
            "soft", "hard", "ok",
        ]  # fmt: skip
        for proc in (proc_a, proc_b):
            output = stop(proc)  # exits 0 by itself
            assert "hunter2" not in output
