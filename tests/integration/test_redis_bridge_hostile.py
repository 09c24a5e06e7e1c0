"""What another replica (or anyone who can write to Redis) sends is bounded before it is
used, and nothing it sends stops the bridge: a bad event is counted and dropped, a large
hash is read in chunks up to a bound. Before, one 400-digit ``queue_size`` crashed the
bridge (and, kept in a replica's hash, kept it down), and a hash of 20,000 fields was
read and validated whole at every re-read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import FeedbackFanout, RedisFeedbackBridge, encode_event
from market_data_store.feedback.redis_bridge import (
    MAX_FIELDS_PER_KEY,
    MAX_SEED_EVENTS,
    MAX_SEED_KEYS,
    latest_key,
)
from tests.support.redis_server import unique_channel
from tests.support.service import service_factory
from tests.support.waits import until

HARD, SOFT, OK = BackpressureLevel.hard, BackpressureLevel.soft, BackpressureLevel.ok


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def channel(redis_url: str) -> str:
    return unique_channel()


@pytest.fixture
async def cleanup(redis: Redis, channel: str) -> AsyncIterator[None]:
    yield
    keys = [key async for key in redis.scan_iter(match=f"{channel}:*", count=1000)]
    for at in range(0, len(keys), 1000):
        await redis.delete(*keys[at : at + 1000])


def body(name: str, **fields: Any) -> bytes:
    """An event of coordinator ``atk-0/<name>`` as JSON, ``fields`` changed (``json``
    writes NaN as ``NaN``)."""
    event = {"coordinator_id": f"atk-0/{name}", "queue_size": 10, "capacity": 100,
             "level": "hard", "source": "store", "ts": time.time(), **fields}  # fmt: skip
    return json.dumps(event).encode()


POISON: dict[Any, bytes] = {  # (Any: what redis-py's invariant Mapping takes)
    "400-digit queue_size": body("q", queue_size=10**400),
    "400-digit capacity": body("c", capacity=10**400),
    "NaN queue_size": body("qnan", queue_size=float("nan")),
    "NaN ts": body("tsnan", ts=float("nan")),
    "5 KB reason": body("r5k", reason="r" * 5000),
    "1 KB reason": body("r1k", reason="r" * 1000),  # within a message's 4 KB, not 256
    "id with a trailing space": body("bars", coordinator_id="atk-0/bars "),
}


def rejected_in(metrics: str) -> float:
    """``mds.feedback.redis.received{outcome=rejected}`` from a /metrics page."""
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "mds_feedback_redis_received_total"
        and sample.labels["outcome"] == "rejected"
    ]
    return value


class Watch:
    """Whether the bridge ever lost its connection after ``start`` (polled every 5 ms)."""

    def __init__(self, bridge: RedisFeedbackBridge) -> None:
        self.bridge = bridge
        self.lost = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.lost += not self.bridge.connected
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def test_bad_events_are_counted_and_dropped_and_the_bridge_goes_on(
    redis_url: str, redis: Redis, channel: str, cleanup: None, database_url: str, tmp_path: Path
) -> None:
    # in a replica's hash (read at start and every 10 s) and, later, on the channel
    await redis.hset(latest_key(channel, "atk-0"), mapping=POISON)
    good = FeedbackEvent.create("good-1/bars", 150, 100, HARD, "queue_full")  # over capacity
    await redis.hset(latest_key(channel, "good-1"), "good-1/bars", encode_event(good))
    make = service_factory(database_url, str(tmp_path))
    async with make(
        MDS_FEEDBACK_REDIS_URL=redis_url,
        MDS_FEEDBACK_REDIS_CHANNEL=channel,
        MDS_FEEDBACK_REDIS_TIMEOUT="0.5",
    ) as svc:
        bridge = svc.components.feedback_channels.redis_bridge
        assert bridge is not None
        await until(lambda: bridge.connected, what="the bridge connected")
        assert bridge.rejected == len(POISON)
        watch = Watch(bridge)
        watch.start()
        for poison in POISON.values():
            await redis.publish(channel, poison)
        later = FeedbackEvent.create("good-2/bars", 5, 100, SOFT, "queue_rising")
        await redis.publish(channel, encode_event(later))
        fanout = svc.components.feedback_fanout
        await until(lambda: "good-2/bars" in fanout.coordinator_ids())
        watch.stop()

        assert watch.lost == 0
        state = (await svc.client.get("/v1/feedback/state")).json()["coordinators"]
        assert sorted((c["coordinator_id"], c["level"], c["utilization"]) for c in state) == [
            ("good-1/bars", "hard", 1.5),
            ("good-2/bars", "soft", 0.05),
            ("test/bars", "ok", 0.0),
        ]
        health = (await svc.client.get("/healthz")).json()
        (feedback,) = [c for c in health["components"] if c["name"] == "feedback"]
        assert feedback["details"]["redis"] == "connected"
        assert bridge.rejected == 2 * len(POISON)
        metrics = (await svc.client.get("/metrics")).text
        assert rejected_in(metrics) == 2 * len(POISON)


async def bridge_seeding(url: str, channel: str) -> tuple[RedisFeedbackBridge, FeedbackFanout]:
    """A started bridge that has read the hashes once (and re-reads them only in a minute)."""
    fanout = FeedbackFanout()
    bridge = RedisFeedbackBridge(url, channel, fanout, instance_id="me", timeout=1, refresh_sec=60)
    await bridge.start()
    await until(lambda: bridge.connected, what="the bridge connected")
    return bridge, fanout


async def test_a_large_hash_is_read_in_part_and_the_bridge_stays_up(
    redis_url: str, redis: Redis, channel: str, cleanup: None
) -> None:
    """5,000 fields in one replica's hash: 1,000 are read (a replica has a handful of
    coordinators; more is hostile), the other replicas' hashes still are."""
    big = encode_event(FeedbackEvent.create("big/bars", 1, 10, SOFT))
    await redis.hset(latest_key(channel, "big"), mapping={f"f{i}": big for i in range(5_000)})
    good = FeedbackEvent.create("good-1/bars", 1, 10, OK)
    await redis.hset(latest_key(channel, "good-1"), "good-1/bars", encode_event(good))
    bridge, fanout = await bridge_seeding(redis_url, channel)
    try:
        assert fanout.coordinator_ids() == ["big/bars", "good-1/bars"]
        assert bridge.received == MAX_FIELDS_PER_KEY + 1 + 1  # + the big key's refusal
        assert bridge.rejected == 1
    finally:
        await bridge.stop()


async def test_a_hash_of_huge_values_is_refused_unread(
    redis_url: str, redis: Redis, channel: str, cleanup: None
) -> None:
    """The review of issue 18: HSCAN brings values back whole, so 6 values of 16 MiB
    cost the bridge 100+ MiB at every re-read. A hash larger than its 1,000 events could
    be is refused before it is read; the others still are."""
    huge = b"x" * (16 << 20)
    await redis.hset(latest_key(channel, "huge"), mapping={f"f{i}": huge for i in range(2)})
    good = FeedbackEvent.create("good-1/bars", 1, 10, OK)
    await redis.hset(latest_key(channel, "good-1"), "good-1/bars", encode_event(good))
    bridge, fanout = await bridge_seeding(redis_url, channel)
    try:
        assert fanout.coordinator_ids() == ["good-1/bars"]
        assert bridge.received - bridge.rejected == 1  # nothing of the huge hash read
        assert bridge.rejected == 1  # its refusal
    finally:
        await bridge.stop()


async def test_keys_that_are_no_replica_s_hash_do_not_crowd_the_others_out(
    redis_url: str, redis: Redis, channel: str, cleanup: None
) -> None:
    """The review of issue 18: keys under the prefix that are not hashes counted
    against the hashes read per re-read; more of them than that left real replicas
    unread, and their coordinators would have been taken as gone."""
    async with redis.pipeline(transaction=False) as pipe:
        for k in range(MAX_SEED_KEYS + 200):
            pipe.set(latest_key(channel, f"junk{k}"), b"not a hash")
        await pipe.execute()
    good = FeedbackEvent.create("good-1/bars", 1, 10, OK)
    await redis.hset(latest_key(channel, "good-1"), "good-1/bars", encode_event(good))
    bridge, fanout = await bridge_seeding(redis_url, channel)
    try:
        assert fanout.coordinator_ids() == ["good-1/bars"]
        assert bridge.rejected == MAX_SEED_KEYS + 200
    finally:
        await bridge.stop()


@pytest.mark.parametrize(
    ("keys", "fields"),
    [(MAX_SEED_KEYS + 10, 1), (MAX_SEED_EVENTS // MAX_FIELDS_PER_KEY + 2, MAX_FIELDS_PER_KEY)],
    ids=["many replicas", "many large hashes"],
)
async def test_a_re_read_is_bounded_in_hashes_and_events(
    redis_url: str, redis: Redis, channel: str, cleanup: None, keys: int, fields: int
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for k in range(keys):
            event = encode_event(FeedbackEvent.create(f"r{k}/bars", 1, 10, OK))
            pipe.hset(latest_key(channel, f"r{k}"), mapping={f"f{i}": event for i in range(fields)})
        await pipe.execute()
    bridge, _ = await bridge_seeding(redis_url, channel)
    try:
        read = bridge.received - bridge.rejected
        assert read <= max(MAX_SEED_KEYS, MAX_SEED_EVENTS)
        assert read in (MAX_SEED_KEYS * fields, MAX_SEED_EVENTS)
        assert bridge.rejected == 1  # the rest, refused at once
    finally:
        await bridge.stop()
