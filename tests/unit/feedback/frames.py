"""What the fan-out tests share: events, and a subscriber's frames as its stream takes them."""

from __future__ import annotations

import json

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback import Subscriber

OK, SOFT, HARD = BackpressureLevel.ok, BackpressureLevel.soft, BackpressureLevel.hard


def event(
    cid: str,
    level: BackpressureLevel,
    size: int = 0,
    ts: float | None = None,
    reason: str = "test",
) -> FeedbackEvent:
    e = FeedbackEvent.create(cid, size, 100, level, reason)
    return e if ts is None else e.model_copy(update={"ts": ts})


def drain(sub: Subscriber) -> list[tuple[int, str, str]]:
    """(id, coordinator, level) of every frame buffered for ``sub``, taken as the stream
    would take them (chunk after chunk)."""
    out = []
    chunks = []
    while chunk := sub._take():
        chunks.append(chunk)
    for message in b"".join(chunks).split(b"\n\n"):
        if message:
            lines = dict(line.split(b": ", 1) for line in message.split(b"\n"))
            data = json.loads(lines[b"data"])
            out.append((int(lines[b"id"]), data["coordinator_id"], data["level"]))
    return out
