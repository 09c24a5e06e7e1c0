"""What the client sends and reads: bars as MessagePack, answers and feedback as JSON.

Bars are checked once, when written, and sent as: a ``Decimal``, its decimal text
in plain notation (every digit kept; written by the encoder), an int or a finite
float, a MessagePack number (the store reads a float as its shortest repr, never
binary noise), an aware ``datetime``, a MessagePack timestamp; text as it is. The store makes
the same rows of them as of 0.4.0's all-text bars. What the store alone can judge
(price order, ranges, symbol rules) is left to it; what can never be sent is
refused at once with ``InvalidBarError``.
"""

from __future__ import annotations

import math
import operator
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


Number = str | int | float | Decimal
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1  # what MessagePack holds


class WireBar(msgspec.Struct, omit_defaults=True, gc=False):
    """One bar as sent: Core ``Bar`` fields; ``ts`` an aware ``datetime`` (a
    MessagePack timestamp) or RFC 3339 text; numbers a finite ``Decimal`` (its text,
    in plain notation: ``encode_body``), decimal text, or an int or a finite float
    (MessagePack numbers, which the store reads as their shortest repr).
    ``gc=False``: nothing it holds can refer back to it."""

    symbol: str
    ts: datetime | str
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
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
    """The MessagePack body; ``Decimal``s as their text in plain notation."""
    body = _encoder.encode(WireBody(provider, bars))  # a Decimal as str(): 1E+2, 0E-8 ...
    if _scientific(body):  # ... those in plain notation (the store's fast path)
        body = _encoder.encode(WireBody(provider, [_plain(bar) for bar in bars]))
    return body


def _scientific(body: bytes) -> bool:
    """Whether ``body`` may hold a number in scientific notation (``<digit>E+`` or
    ``<digit>E-``; bytes of a timestamp or a float may look like one, rarely).
    Searched for the letter, with memchr: a few µs for 5,000 bars."""
    find = body.find
    at = find(b"E", 1)
    while at >= 0:
        if body[at + 1 : at + 2] in (b"+", b"-") and 48 <= body[at - 1] <= 57:
            return True
        at = find(b"E", at + 1)
    return False


def _plain(bar: WireBar) -> WireBar:
    """``bar`` with its ``Decimal``s as text in plain notation."""
    numbers = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    if not any(type(n) is Decimal for n in numbers):
        return bar
    o, h, lo, c, v = (format(n, "f") if type(n) is Decimal else n for n in numbers)
    return WireBar(bar.symbol, bar.ts, o, h, lo, c, v, bar.resolution, bar.delayed)


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


_REQUIRED = operator.itemgetter(*REQUIRED_FIELDS)


def to_wire(bar: Bar | Mapping[str, Any] | WireBar, index: int) -> WireBar:
    """One written bar as sent; ``InvalidBarError`` when it can never be sent.

    About a microsecond for the common bars (a dict or Core ``Bar``, an aware
    ``datetime``, five finite ``Decimal``; or a dict of text, half that): the checks
    of those cases are inline, anything else takes the general path. ``Decimal``s and
    ``datetime``s are kept as they are: the encoder writes them (as text and as
    MessagePack timestamps) in C."""
    if type(bar) is Bar:  # its fields, as pydantic keeps them
        bar = bar.__dict__
    if type(bar) is dict or (not isinstance(bar, Bar | WireBar) and isinstance(bar, Mapping)):
        try:
            symbol, ts, o, h, lo, c, v = _REQUIRED(bar)
        except KeyError:
            for name in REQUIRED_FIELDS:
                if name not in bar:
                    raise InvalidBarError(index, name, "required") from None
            raise
        resolution = bar.get("resolution", "1d")
        delayed = bar.get("delayed", False)
    elif isinstance(bar, Bar):
        symbol, ts, resolution, delayed = bar.symbol, bar.ts, bar.resolution, bar.delayed
        o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    elif isinstance(bar, WireBar):
        return bar
    else:
        raise InvalidBarError(
            index, "$", f"a Core Bar or a mapping of its fields, not {type(bar).__name__}"
        )
    if (
        type(symbol) is str
        and type(ts) is str
        and type(o) is str
        and type(h) is str
        and type(lo) is str
        and type(c) is str
        and type(v) is str
        and type(resolution) is str
        and (delayed is False or delayed is True)
    ):
        return WireBar(symbol, ts, o, h, lo, c, v, resolution, delayed)  # text: the store checks it
    if not isinstance(symbol, str):
        raise InvalidBarError(index, "symbol", "must be a string")
    if not isinstance(resolution, str):
        raise InvalidBarError(index, "resolution", "must be a string such as 1m")
    if delayed is not True and delayed is not False:
        raise InvalidBarError(index, "delayed", "must be true or false")
    when: datetime | str = (
        ts
        if type(ts) is datetime
        and (ts.tzinfo is UTC or ts.utcoffset() is not None)
        and 1 < ts.year < 9999  # in UTC too (MessagePack timestamps are in UTC)
        else _timestamp(ts, index)
    )
    if (
        type(o) is Decimal
        and type(h) is Decimal
        and type(lo) is Decimal
        and type(c) is Decimal
        and type(v) is Decimal
        and o.is_finite()
        and h.is_finite()
        and lo.is_finite()
        and c.is_finite()
        and v.is_finite()
    ):
        return WireBar(symbol, when, o, h, lo, c, v, resolution, delayed)
    return WireBar(
        symbol,
        when,
        _number(o, index, "open"),
        _number(h, index, "high"),
        _number(lo, index, "low"),
        _number(c, index, "close"),
        _number(v, index, "volume"),
        resolution,
        delayed,
    )


def _timestamp(value: Any, index: int) -> datetime | str:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidBarError(index, "ts", "must be timezone-aware (a naive time is ambiguous)")
        if type(value) is datetime and 1 < value.year < 9999:
            return value  # a MessagePack timestamp: the instant, in UTC
        try:  # a subclass (pandas' Timestamp), or near the ends of datetime's range
            return _utc_text(value)
        except OverflowError:
            raise InvalidBarError(index, "ts", "is out of range in UTC") from None
    if isinstance(value, str):
        return value  # RFC 3339 text: the store checks it
    raise InvalidBarError(index, "ts", f"must be a datetime or RFC 3339 text, not {type(value)}")


def _number(value: Any, index: int, field: str) -> Number:
    """Decimal text, a finite ``Decimal``, an int (within MessagePack's range) or a
    finite float as it is; anything else as text, or ``InvalidBarError``."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]  # decimal text: the store checks it
    if kind is Decimal:
        if value.is_finite():
            return value  # type: ignore[no-any-return]  # its text, plain (encode_body)
    elif kind is float:
        if math.isfinite(value):
            return value  # type: ignore[no-any-return]  # the store reads its shortest repr
    elif kind is int and _MIN_INT <= value <= _MAX_INT:
        return value  # type: ignore[no-any-return]
    return _number_text(value, index, field)


def _number_text(value: Any, index: int, field: str) -> str:
    """What ``_number`` does not pass as it is, as text (or ``InvalidBarError``)."""
    if isinstance(value, str):
        return value
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


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()[:-6] + "Z"  # ends with +00:00 now


def _sent_text(value: Any) -> Any:
    """A value of a ``WireBar`` as ``as_dicts`` hands it back: text, as 0.4.0 did."""
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def as_dicts(bars: list[WireBar]) -> list[dict[str, Any]]:
    """Bars of a failed batch, as plain dicts (what ``write`` takes back): times as
    RFC 3339 text in UTC, numbers as decimal text."""
    return [
        {name: _sent_text(value) for name, value in msgspec.structs.asdict(b).items()} for b in bars
    ]
