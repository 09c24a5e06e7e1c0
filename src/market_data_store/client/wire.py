"""What the client sends and reads: bars as MessagePack, answers and feedback as JSON.

Bars are converted once, when written: prices and volume become decimal strings
(a ``Decimal`` keeps its exact digits, a float its shortest repr, never binary
noise), ``ts`` an RFC 3339 string in UTC. What the store alone can judge (price
order, ranges, symbol rules) is left to it; what can never be sent is refused
at once with ``InvalidBarError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import msgspec

from market_data_store.contracts import Bar

from .errors import InvalidBarError

Level = Literal["ok", "soft", "hard"]
LEVEL_RANK: dict[str, int] = {"ok": 0, "soft": 1, "hard": 2}

MSGPACK = "application/msgpack"
NUMBER_FIELDS = ("open", "high", "low", "close", "volume")
REQUIRED_FIELDS = ("symbol", "ts", *NUMBER_FIELDS)


class WireBar(msgspec.Struct, omit_defaults=True):
    """One bar as sent (Core ``Bar`` fields, numbers as decimal strings)."""

    symbol: str
    ts: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    resolution: str = "1d"
    delayed: bool = False


class WireBody(msgspec.Struct):
    provider: str
    bars: list[WireBar]


class IngestAnswer(msgspec.Struct):
    """202/201 body of ``POST /v1/bars``."""

    accepted: int
    level: Level
    queue_size: int
    capacity: int
    coordinator_id: str | None = None
    credit: int | None = None
    committed: int | None = None
    dead_lettered: int | None = None
    dead_lettered_indices: list[int] | None = None
    pending: bool = False


class Feedback(msgspec.Struct, frozen=True):
    """A coordinator's backpressure level: a Core ``FeedbackEvent`` (+ ``reason``,
    ``utilization``) from the stream, or what an answer of the store said.

    ``via``: ``stream`` (an event of ``/v1/feedback/stream``), ``answer`` (the
    level of a 202/201) or ``refusal`` (the feedback of a 503).
    """

    coordinator_id: str
    level: Level
    queue_size: int
    capacity: int
    ts: float | None = None
    reason: str | None = None
    source: str = "store"
    utilization: float | None = None
    drain_rate: float | None = None  # the store's bars/s over the last second
    credit: int | None = None  # bars one producer may have out (see ``CreditWindow``)
    via: Literal["stream", "answer", "refusal"] = "stream"


_encoder = msgspec.msgpack.Encoder()
_answer = msgspec.json.Decoder(IngestAnswer)
_feedback = msgspec.json.Decoder(Feedback)
_any_json = msgspec.json.Decoder()


def encode_body(provider: str, bars: list[WireBar]) -> bytes:
    return _encoder.encode(WireBody(provider, bars))


def decode_answer(content: bytes) -> IngestAnswer | None:
    try:
        return _answer.decode(content)
    except msgspec.DecodeError:
        return None


def decode_feedback(content: bytes | str, via: Literal["stream", "answer", "refusal"]) -> Feedback:
    """Raises ``msgspec.DecodeError`` when ``content`` is not a feedback event."""
    event = _feedback.decode(content)
    return event if event.via == via else msgspec.structs.replace(event, via=via)


def decode_problem(status: int, content: bytes) -> dict[str, Any]:
    """The RFC 9457 body, or a stand-in when the answer is not one (a proxy's page)."""
    try:
        data = _any_json.decode(content)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        return data
    text = content[:500].decode("utf-8", "replace").strip()
    return {"status": status, "detail": text or f"HTTP {status}"}


def retry_after(header: str | None, problem: dict[str, Any] | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else from the
    problem's ``retry_after``; None when neither says."""
    if header:
        text = header.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                when = None
            seconds = (when - datetime.now(UTC)).total_seconds() if when and when.tzinfo else -1
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    value = problem.get("retry_after") if problem else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def to_wire(bar: Bar | Mapping[str, Any] | WireBar, index: int) -> WireBar:
    """One written bar as sent; ``InvalidBarError`` when it can never be sent."""
    if isinstance(bar, WireBar):
        return bar
    if isinstance(bar, Bar):
        fields: Mapping[str, Any] = {
            "symbol": bar.symbol,
            "ts": bar.ts,
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
            "resolution": bar.resolution,
            "delayed": bar.delayed,
        }
    elif isinstance(bar, Mapping):
        fields = bar
        for name in REQUIRED_FIELDS:
            if name not in fields:
                raise InvalidBarError(index, name, "required")
    else:
        raise InvalidBarError(
            index, "$", f"a Core Bar or a mapping of its fields, not {type(bar).__name__}"
        )
    symbol = fields["symbol"]
    if not isinstance(symbol, str):
        raise InvalidBarError(index, "symbol", "must be a string")
    resolution = fields.get("resolution", "1d")
    if not isinstance(resolution, str):
        raise InvalidBarError(index, "resolution", "must be a string such as 1m")
    delayed = fields.get("delayed", False)
    if not isinstance(delayed, bool):
        raise InvalidBarError(index, "delayed", "must be true or false")
    return WireBar(
        symbol,
        _timestamp(fields["ts"], index),
        _number(fields["open"], index, "open"),
        _number(fields["high"], index, "high"),
        _number(fields["low"], index, "low"),
        _number(fields["close"], index, "close"),
        _number(fields["volume"], index, "volume"),
        resolution,
        delayed,
    )


def _timestamp(value: Any, index: int) -> str:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidBarError(index, "ts", "must be timezone-aware (a naive time is ambiguous)")
        return value.astimezone(UTC).isoformat()[:-6] + "Z"  # ends with +00:00 now
    if isinstance(value, str):
        return value  # RFC 3339 text: the store checks it
    raise InvalidBarError(index, "ts", f"must be a datetime or RFC 3339 text, not {type(value)}")


def _number(value: Any, index: int, field: str) -> str:
    if isinstance(value, str):
        return value  # decimal text: sent as is, the store checks it
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidBarError(index, field, "must be a finite number")
        return format(value, "f")  # plain notation, every digit kept
    if isinstance(value, bool):
        raise InvalidBarError(index, field, "must be a number, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidBarError(index, field, "must be a finite number")
        return repr(value)  # the shortest text that reads back as this float
    raise InvalidBarError(index, field, f"must be a decimal string or a number, not {type(value)}")


def as_dicts(bars: list[WireBar]) -> list[dict[str, Any]]:
    """Bars of a failed batch, as plain dicts (what ``write`` takes back)."""
    return [msgspec.structs.asdict(b) for b in bars]
