"""Feedback delivery: backpressure events leave the process.

- ``FeedbackFanout``: Server-Sent Events to ``Subscriber``s, snapshot and history
  (every SSE byte is written by ``sse``);
- ``HttpFeedbackBroadcaster``: a webhook;
- ``RedisFeedbackPublisher`` / ``RedisFeedbackBridge``: every replica's events
  to every replica's streams.

Depends on ``coordinator`` only (no HTTP framework, no database driver). Bus
subscribers never await I/O: they buffer (``Outbox``) and return.
"""

from .channels import ChannelsStatus, FeedbackChannels
from .fanout import FanoutStats, FeedbackFanout, StreamRefusedError
from .outbox import DeliveryStats, Outbox
from .redis_bridge import RedisFeedbackBridge, RedisFeedbackPublisher
from .sse import KEEPALIVE, RETRY_MS, Frame
from .subscriber import Subscriber
from .webhook import HttpFeedbackBroadcaster
from .wire import LEVEL_RANK, MAX_ID_LENGTH, WireError, decode_event, encode_event, event_dict

__all__ = [
    "KEEPALIVE",
    "LEVEL_RANK",
    "MAX_ID_LENGTH",
    "RETRY_MS",
    "ChannelsStatus",
    "DeliveryStats",
    "FanoutStats",
    "FeedbackChannels",
    "FeedbackFanout",
    "Frame",
    "HttpFeedbackBroadcaster",
    "Outbox",
    "RedisFeedbackBridge",
    "RedisFeedbackPublisher",
    "StreamRefusedError",
    "Subscriber",
    "WireError",
    "decode_event",
    "encode_event",
    "event_dict",
]
