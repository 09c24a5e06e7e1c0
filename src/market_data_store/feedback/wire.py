"""FeedbackEvents as bytes: Core's JSON plus ``reason``, ``utilization`` and, from a
coordinator that has them, ``drain_rate`` and ``credit``.

Every channel (SSE, webhook, Redis) sends the same bytes, encoded once per
event. They validate as ``market_data_core.telemetry.FeedbackEvent`` (whose
models ignore the extra fields).
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import pydantic

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent

MAX_EVENT_BYTES = 4096
"""Largest event accepted from outside (Redis); ours are a few hundred bytes."""

MAX_CLOCK_SKEW = 60.0
"""Seconds another replica's clock may be ahead of ours."""
MAX_ID_LENGTH = 200

LEVEL_RANK = {BackpressureLevel.ok: 0, BackpressureLevel.soft: 1, BackpressureLevel.hard: 2}

_encoder = msgspec.json.Encoder()


class WireError(ValueError):
    """Bytes that are not a FeedbackEvent (too large, not JSON, wrong fields)."""


def event_dict(event: FeedbackEvent) -> dict[str, Any]:
    """The event as plain JSON data, Core's field names first."""
    data: dict[str, Any] = {
        "coordinator_id": event.coordinator_id,
        "queue_size": event.queue_size,
        "capacity": event.capacity,
        "level": event.level.value,
        "source": event.source,
        "ts": event.ts,
        "reason": event.reason,
        "utilization": round(event.utilization, 4),
    }
    if event.drain_rate is not None:
        data["drain_rate"] = event.drain_rate
    if event.credit is not None:
        data["credit"] = event.credit
    return data


def encode_event(event: FeedbackEvent) -> bytes:
    """Compact JSON of ``event_dict(event)``: one line, no newline inside."""
    return _encoder.encode(event_dict(event))


def decode_event(data: bytes | str) -> FeedbackEvent:
    """Parse and validate an event received from another replica: Core's model, plus
    what keeps one bad message from poisoning the snapshot (a ``ts`` that is not a
    finite time up to ``MAX_CLOCK_SKEW`` s ahead would hide every later event of its
    coordinator; an id must be printable and short)."""
    if len(data) > MAX_EVENT_BYTES:
        raise WireError(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        event = FeedbackEvent.model_validate_json(data)
    except pydantic.ValidationError as exc:
        raise WireError(f"not a FeedbackEvent: {exc.error_count()} error(s)") from None
    if not (math.isfinite(event.ts) and 0 < event.ts <= time.time() + MAX_CLOCK_SKEW):
        raise WireError("ts is not a time up to now")
    coord_id = event.coordinator_id
    if not coord_id or len(coord_id) > MAX_ID_LENGTH or not coord_id.isprintable():
        raise WireError(f"coordinator_id must be 1-{MAX_ID_LENGTH} printable characters")
    return event
