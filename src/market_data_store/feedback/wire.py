"""FeedbackEvents as bytes: Core's JSON plus ``reason``, ``utilization`` and, from a
coordinator that has them, ``drain_rate`` and ``credit``.

Every channel (SSE, webhook, Redis) sends the same bytes, encoded once per
event. They validate as ``market_data_core.telemetry.FeedbackEvent`` (whose
models ignore the extra fields).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import msgspec
import pydantic

from market_data_store.config.schema import ID_PART
from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.coordinator.events import MAX_EXTENSION

MAX_EVENT_BYTES = 4096
"""Largest event accepted from outside (Redis); ours are a few hundred bytes."""

MAX_CLOCK_SKEW = 60.0
"""Seconds another replica's clock may be ahead of ours."""
MIN_TS = 946_684_800.0
"""2000-01-01: no replica's clock says earlier."""
MAX_ID_LENGTH = 200
MAX_COUNT = 1_000_000_000
"""Bound of ``queue_size`` and ``capacity`` from another replica (each on its own:
a request larger than the queue goes in whole, so a real queue can exceed its capacity)."""
MAX_REASON_LENGTH = 256
"""Characters of ``reason`` from another replica (ours are a word or two)."""
MAX_SOURCE_LENGTH = 64

INSTANCE_ID = re.compile(ID_PART)
"""An instance id (``server.instance_id``'s rule): match with ``fullmatch``."""
COORDINATOR_ID = re.compile(f"{ID_PART}/{ID_PART}")
"""``<instance>/<name>``, as every replica names its coordinators (``instance/bars``)."""

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


_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Extension = Annotated[float, msgspec.Meta(ge=0, le=MAX_EXTENSION)]


class _RemoteEvent(msgspec.Struct, frozen=True):
    """What another replica may send: Core's fields and ours, each of its JSON type
    (no ``"10"`` for 10, no ``true`` for 1), within absolute bounds."""

    coordinator_id: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
    queue_size: _Count
    capacity: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
    level: BackpressureLevel
    ts: Annotated[float, msgspec.Meta(ge=MIN_TS)]
    source: Annotated[str, msgspec.Meta(max_length=MAX_SOURCE_LENGTH)] = "store"
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON_LENGTH)] | None = None
    drain_rate: _Extension | None = None
    credit: Annotated[int, msgspec.Meta(ge=0, le=MAX_EXTENSION)] | None = None


_remote_decoder = msgspec.json.Decoder(_RemoteEvent)


def decode_event(data: bytes | str) -> FeedbackEvent:
    """Parse and validate an event received from another replica: Core's model, plus
    what keeps one bad message from poisoning the snapshot or the bridge: every field
    of its JSON type within absolute bounds (counts up to ``MAX_COUNT``, a ``reason``
    up to ``MAX_REASON_LENGTH`` characters), a ``ts`` that is a finite time since 2000
    and up to ``MAX_CLOCK_SKEW`` s ahead (a later one would hide every later event of its
    coordinator), and a ``coordinator_id`` of the form ``<instance>/<name>``
    (``COORDINATOR_ID``: the rule of local ids)."""
    if len(data) > MAX_EVENT_BYTES:
        raise WireError(f"event of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        raw = _remote_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise WireError(f"not a FeedbackEvent: {_brief(exc)}") from None
    except UnicodeDecodeError:
        raise WireError("not a FeedbackEvent: a string that is not UTF-8") from None
    except RecursionError:
        raise WireError("not a FeedbackEvent: nested too deep") from None
    if not COORDINATOR_ID.fullmatch(raw.coordinator_id):
        raise WireError("coordinator_id is not <instance>/<name> ([A-Za-z0-9._-], 63 each)")
    if not raw.ts <= time.time() + MAX_CLOCK_SKEW:
        raise WireError("ts is not a time up to now")
    try:
        return FeedbackEvent.model_validate(msgspec.structs.asdict(raw))
    except pydantic.ValidationError as exc:
        raise WireError(f"not a FeedbackEvent: {exc.error_count()} error(s)") from None


def instance_of(coordinator_id: str) -> str:
    """The replica a (valid) coordinator id belongs to: the part before its ``/``."""
    return coordinator_id.partition("/")[0]


def _brief(exc: Exception) -> str:
    """msgspec's message (it quotes the bad value, escaped) cut for a log line."""
    text = str(exc)
    return text if len(text) <= 160 else text[:150] + "…" + text[-9:]
