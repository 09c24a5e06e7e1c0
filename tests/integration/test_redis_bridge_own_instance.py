"""A replica never takes its own coordinators as another replica's, whatever Redis holds:
the hash a previous process under the same ``server.instance_id`` left (every restart
of a StatefulSet pod), events published under its id, its coordinators in another
replica's hash. Before, the restarted replica filed its own coordinator as remote and
announced it ``replica_gone`` 30 s later (its state then listed no coordinator)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import (
    FeedbackFanout,
    RedisFeedbackBridge,
    RedisFeedbackPublisher,
    encode_event,
)
from market_data_store.feedback.redis_bridge import latest_key
from market_data_store.feedback.wire import instance_of
from tests.support.redis_server import unique_channel
from tests.support.service import RunningService, service_factory
from tests.support.waits import until

HARD, SOFT, OK = BackpressureLevel.hard, BackpressureLevel.soft, BackpressureLevel.ok
OWN = "test"  # the test service's server.instance_id


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def leave_a_hash(url: str, channel: str, *events: FeedbackEvent) -> None:
    """What a replica's process leaves in Redis when it stops: its hash of latest events
    (expiring 30 s later)."""
    fanout = FeedbackFanout()
    for event in events:
        fanout.publish(event)
    publisher = RedisFeedbackPublisher(
        url,
        channel,
        instance_id=instance_of(events[0].coordinator_id),
        latest=fanout.local_events,
        timeout=1,
    )
    await publisher.start()
    try:
        await until(lambda: publisher.connected)
    finally:
        await publisher.stop()


async def state(svc: RunningService) -> list[tuple[str, str, str | None]]:
    body: dict[str, Any] = (await svc.client.get("/v1/feedback/state")).json()
    return [(c["coordinator_id"], c["level"], c["reason"]) for c in body["coordinators"]]


async def test_a_restarted_replica_keeps_its_coordinator_local(
    redis_url: str, redis: Redis, database_url: str, tmp_path: Path
) -> None:
    channel = unique_channel()
    # the previous process of this replica: its coordinator was hard; it had one more
    await leave_a_hash(
        redis_url,
        channel,
        FeedbackEvent.create(f"{OWN}/bars", 95, 100, HARD, "queue_full"),
        FeedbackEvent.create(f"{OWN}/old", 5, 10, SOFT, "gone_since"),
    )
    assert len(await redis.hkeys(latest_key(channel, OWN))) == 2
    make = service_factory(database_url, str(tmp_path))
    async with make(
        MDS_FEEDBACK_REDIS_URL=redis_url,
        MDS_FEEDBACK_REDIS_CHANNEL=channel,
        MDS_FEEDBACK_REDIS_TIMEOUT="0.5",
    ) as svc:
        channels = svc.components.feedback_channels
        bridge, publisher = channels.redis_bridge, channels.redis_publisher
        assert bridge is not None
        assert publisher is not None
        await until(lambda: bridge.connected and publisher.connected)
        # its own events coming back on the channel, then another replica's
        await redis.publish(
            channel, encode_event(FeedbackEvent.create(f"{OWN}/bars", 99, 100, HARD, "echo"))
        )
        await redis.publish(channel, encode_event(FeedbackEvent.create("other-1/bars", 1, 10, OK)))
        await until(lambda: "other-1/bars" in channels.fanout.coordinator_ids())

        assert await state(svc) == [
            (f"{OWN}/bars", "ok", "service_started"),  # this process's, not the previous one's
            ("other-1/bars", "ok", None),
        ]
        assert channels.fanout.stats.published_remote == 1  # other-1's only
        # what the bridge does once a replica's hash was not refreshed for 3 intervals
        # (30 s): only the other replica's coordinator can go
        assert channels.fanout.expire_remote(0) == ["other-1/bars"]
        assert await state(svc) == [(f"{OWN}/bars", "ok", "service_started")]
        # the previous process's hash is replaced by this one's, not merged into it
        await until(lambda: publisher.stats.sent >= 1)
        assert await redis.hkeys(latest_key(channel, OWN)) == [f"{OWN}/bars".encode()]
        assert bridge.rejected == 0


async def test_no_coordinator_of_its_own_instance_reaches_the_fanout(
    redis_url: str, redis: Redis
) -> None:
    """Before any event of its own (the moment a restarted replica seeds), from its own
    hash, another replica's hash or the channel; and nothing of it expires."""
    url, channel = redis_url, unique_channel()
    fanout = FeedbackFanout()
    own = FeedbackEvent.create("me/bars", 95, 100, HARD, "queue_full")
    other = FeedbackEvent.create("other-1/bars", 1, 10, OK)
    await leave_a_hash(url, channel, own)
    await redis.hset(latest_key(channel, "evil"), "me/bars", encode_event(own))  # not evil's
    await redis.hset(latest_key(channel, "other-1"), "other-1/bars", encode_event(other))
    bridge = RedisFeedbackBridge(url, channel, fanout, instance_id="me", timeout=1, refresh_sec=0.1)
    try:
        await bridge.start()
        await until(lambda: bridge.connected)
        await redis.publish(channel, encode_event(own))
        await until(lambda: fanout.coordinator_ids() == ["other-1/bars"])
        read = bridge.received
        await until(lambda: bridge.received >= read + 6)  # re-read 3 times (and expired)
    finally:
        await bridge.stop()
        await redis.delete(*(latest_key(channel, i) for i in ("me", "evil", "other-1")))
    assert fanout.coordinator_ids() == ["other-1/bars"]
    assert fanout.stats.published_remote == 1
    assert bridge.rejected >= 1  # me/bars in evil's hash, at each re-read
