"""The delivery channels of one service, and their state in one hashable tuple."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .fanout import FeedbackFanout
from .redis_bridge import RedisFeedbackBridge, RedisFeedbackPublisher
from .webhook import HttpFeedbackBroadcaster


class ChannelsStatus(NamedTuple):
    """What health reports (cheap to build, compared to re-render only on change)."""

    subscribers: int
    webhook: str  # off | ok | failing
    redis: str  # off | connected | disconnected
    redis_error: str | None  # a category (``error_category``): public probes show it
    redis_error_detail: str | None = None  # the error's type: the admin view only


@dataclass(frozen=True)
class FeedbackChannels:
    fanout: FeedbackFanout
    webhook: HttpFeedbackBroadcaster | None = None
    redis_publisher: RedisFeedbackPublisher | None = None
    redis_bridge: RedisFeedbackBridge | None = None

    def status(self) -> ChannelsStatus:
        webhook = self.webhook
        webhook_state = "off" if webhook is None else "failing" if webhook.failing else "ok"
        publisher, bridge = self.redis_publisher, self.redis_bridge
        if publisher is None or bridge is None:
            return ChannelsStatus(self.fanout.subscriber_count, webhook_state, "off", None)
        up = publisher.connected and bridge.connected
        failed = None if up else (publisher if publisher.last_error else bridge)
        return ChannelsStatus(
            self.fanout.subscriber_count,
            webhook_state,
            "connected" if up else "disconnected",
            None if failed is None else failed.last_error_category,
            None if failed is None else failed.last_error,
        )
