"""Feedback delivery: the SSE fan-out (always: it also answers ``/v1/feedback/state``),
the webhook and the Redis bridge when configured, each subscribed to the bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from market_data_store.config import Settings, endpoint_origin, redact_url
from market_data_store.coordinator import FeedbackBus
from market_data_store.feedback import (
    FeedbackChannels,
    FeedbackFanout,
    HttpFeedbackBroadcaster,
    RedisFeedbackBridge,
    RedisFeedbackPublisher,
)
from market_data_store.telemetry import Instruments

log = logging.getLogger(__name__)


@asynccontextmanager
async def feedback_delivery(
    settings: Settings,
    bus: FeedbackBus,
    instruments: Instruments,
    *,
    streams_end: asyncio.Event,
) -> AsyncIterator[FeedbackChannels]:
    """The channels, started. Open streams end when ``streams_end`` is set (shutdown
    begins); the channels stop only when the context ends, after the coordinator
    drained, so its last events still go out (each stop bounded by its timeout)."""
    f = settings.feedback
    async with AsyncExitStack() as stack:
        fanout = FeedbackFanout(
            history=f.sse.history,
            subscriber_queue=f.sse.subscriber_queue,
            max_subscribers=f.sse.max_streams,
            heartbeat_sec=f.sse.heartbeat_sec,
        )
        fanout.start(streams_end)
        stack.push_async_callback(fanout.stop)
        bus.subscribe(fanout.on_local_event)

        webhook = None
        if f.webhook.url:
            webhook = HttpFeedbackBroadcaster(
                f.webhook.url,
                timeout=f.webhook.timeout,
                max_attempts=f.webhook.max_attempts,
                bus=bus,
                queue_size=f.webhook.queue_size,
            )
            await webhook.start()
            stack.push_async_callback(webhook.stop)
            log.info("feedback webhook on: %s", endpoint_origin(f.webhook.url))

        publisher = bridge = None
        if f.redis.url:
            publisher = RedisFeedbackPublisher(
                f.redis.url,
                f.redis.channel,
                instance_id=settings.server.resolved_instance_id,
                latest=fanout.local_events,
                queue_size=f.redis.queue_size,
                timeout=f.redis.timeout,
            )
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            bus.subscribe(publisher.publish)
            bridge = RedisFeedbackBridge(
                f.redis.url,
                f.redis.channel,
                fanout,
                instance_id=settings.server.resolved_instance_id,
                timeout=f.redis.timeout,
            )
            await bridge.start()
            stack.push_async_callback(bridge.stop)
            log.info("feedback via Redis %s, channel %s", redact_url(f.redis.url), f.redis.channel)

        channels = FeedbackChannels(fanout, webhook, publisher, bridge)
        instruments.feedback.track(channels)
        stack.callback(instruments.feedback.untrack)
        yield channels
