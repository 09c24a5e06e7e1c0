"""What the client sends and reads: bars as MessagePack, answers and feedback as JSON.

Bars are checked once, when written, and sent as: a ``Decimal``, its decimal text
in plain notation (every digit kept; written by the encoder), an int or a finite
float, a MessagePack number (the store reads a float as its shortest repr, never
binary noise), an aware ``datetime``, a MessagePack timestamp; text as it is. The store makes
the same rows of them as of 0.4.0's all-text bars. What the store alone can judge
(price order, ranges, symbol rules) is left to it; what can never be sent is
refused at once with ``InvalidBarError``.

Every number the store sends (counts and levels in answers and feedback events,
``Retry-After``, the stream's ``retry:``) goes through ``server_number``: whatever
answers in the store's place may be broken or hostile, and a number out of range
must cost a warning, never a traceback or a batch.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import msgspec

from market_data_store._util import ThrottledLog
from market_data_store.contracts import Bar

from .errors import InvalidBarError

log = logging.getLogger(__name__)

Level = Literal["ok", "soft", "hard"]
LEVEL_RANK: dict[str, int] = {"ok": 0, "soft": 1, "hard": 2}

MSGPACK = "application/msgpack"
NUMBER_FIELDS = ("open", "high", "low", "close", "volume")
REQUIRED_FIELDS = ("symbol", "ts", *NUMBER_FIELDS)


Number = str | int | float | Decimal
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1  # what MessagePack holds

MAX_COUNT = 10**9
"""Largest count believed from the store (bars, queue size, capacity, credit, a
rate): the store bounds every queue and every remote replica's numbers by it."""


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


class _TextBar(WireBar, omit_defaults=True, gc=False):
    """A ``WireBar`` all of text, as most producers hand their bars over (dicts of
    strings): a list of them is typed in one C pass (``to_wire_all``)."""

    ts: str
    open: str
    high: str
    low: str
    close: str
    volume: str


_TEXT_BARS = list[_TextBar]


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


BAD_JSON = (msgspec.DecodeError, ValueError, RecursionError)
"""What decoding a body can raise: not JSON, not the expected shape, invalid UTF-8 in
a string (``UnicodeDecodeError``), nesting too deep for the decoder."""


def decode_answer(content: bytes) -> IngestAnswer | None:
    """The store's 202/201 answer (its numbers within ``[0, MAX_COUNT]``), or None
    when ``content`` is not one."""
    try:
        answer = _answer.decode(content)
    except BAD_JSON:
        return None
    return _counted(answer, _ANSWER_NUMBERS, "an answer")


def decode_feedback(content: bytes | str, via: Literal["stream", "answer", "refusal"]) -> Feedback:
    """A feedback event (its numbers within ``[0, MAX_COUNT]``); raises one of
    ``BAD_JSON`` when ``content`` is not one."""
    event = _counted(_feedback.decode(content), _FEEDBACK_NUMBERS, "a feedback event")
    return event if event.via == via else msgspec.structs.replace(event, via=via)


_ANSWER_NUMBERS = ("accepted", "queue_size", "capacity", "credit", "committed", "dead_lettered")
_FEEDBACK_NUMBERS = ("queue_size", "capacity", "credit", "utilization", "drain_rate")
_S = TypeVar("_S", IngestAnswer, Feedback)


def _counted(struct: _S, names: tuple[str, ...], where: str) -> _S:
    """``struct`` with each of its ``names`` (counts, rates) within ``[0, MAX_COUNT]``."""
    changes: dict[str, float] = {}
    for name in names:
        value = getattr(struct, name)
        if value is not None and not 0 <= value <= MAX_COUNT:
            bounded = server_number(value, f"{where}'s {name}", low=0, high=MAX_COUNT) or 0
            changes[name] = int(bounded) if isinstance(value, int) else bounded
    return msgspec.structs.replace(struct, **changes) if changes else struct


def decode_problem(status: int, content: bytes) -> dict[str, Any]:
    """The RFC 9457 body, or a stand-in when the answer is not one (a proxy's page)."""
    try:
        data = _any_json.decode(content)
    except BAD_JSON:
        data = None
    if isinstance(data, dict):
        return data
    text = content[:500].decode("utf-8", "replace").strip()
    return {"status": status, "detail": text or f"HTTP {status}"}


def retry_after(
    header: str | None, problem: dict[str, Any] | None = None, *, most: float
) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else from the
    problem's ``retry_after``, cut to ``most``; None when neither says (or neither is
    a number: see ``server_number``)."""
    if header:
        text = header.strip()
        value: object = text
        if not _is_number(text):
            when = _http_date(text[:LONGEST_NUMBER])
            if when is not None:
                value = max(0.0, when)  # a date just past (clocks differ): now
        seconds = server_number(value, "a Retry-After header", low=0, high=most)
        if seconds is not None:
            return seconds
    said = problem.get("retry_after") if problem else None
    if said is None:
        return None
    return server_number(said, "a problem's retry_after", low=0, high=most)


def _http_date(text: str) -> float | None:
    """Seconds from now to the HTTP-date ``text``; None when it is not one."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return (when - datetime.now(UTC)).total_seconds()


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
r"""A decimal number as servers write one (no ``inf``/``nan`` words, no ``_``). Each
part can match only one way: a long run of digits that ends in something else fails
in linear time (``[0-9]+\.?[0-9]*`` backtracked quadratically: seconds for 16,000
digits, hours for a 1 MiB problem body)."""
LONGEST_NUMBER = 64
"""Longer text is matched no further: all digits is a huge number, else none."""


def _is_number(text: str) -> bool:
    """``text`` is a number as servers write one, at most ``LONGEST_NUMBER`` long."""
    return len(text) <= LONGEST_NUMBER and _NUMBER.fullmatch(text) is not None


_warn = ThrottledLog(log)


def server_number(value: object, what: str, *, low: float, high: float) -> float | None:
    """A number the store sent (a JSON number, or header or stream text) within
    ``[low, high]``: clamped into it when beyond (a 400-digit count, a negative
    delay), None when it is no number at all (malformed text, NaN, a boolean).

    Never raises, whatever the value: the client is to keep working against a
    broken or hostile server. Each value clamped or ignored is logged (WARNING, at
    most once per ``what`` every 10 s), shown cut to a few dozen characters.
    """
    number: float | None = None
    if isinstance(value, str):
        text = value.strip()
        if _is_number(text):
            number = float(text)  # 1e999: inf, clamped below
        elif text.isascii() and text.isdigit():
            number = math.inf  # too many digits to match: clamped below
    elif isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        # compared, never converted: float() of a 400-digit int raises OverflowError
        number = float(value) if -(2**63) < value < 2**63 else math.inf if value > 0 else -math.inf
    elif isinstance(value, float):
        number = value
    if number is None or math.isnan(number):
        _warn.log(
            logging.WARNING,
            what,
            "store client: the store sent %s %s: not a number, ignored",
            what,
            _shown(value),
        )
        return None
    if low <= number <= high:
        return number
    bounded = low if number < low else high
    _warn.log(
        logging.WARNING,
        what,
        "store client: the store sent %s %s: out of range, taken as %g",
        what,
        _shown(value),
        bounded,
    )
    return bounded


def _shown(value: object) -> str:
    """``value`` for a log line: at most about 40 characters (a hostile server's
    5,000 digits are not repeated; ``str`` of such an int would raise anyway)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"(an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


_REQUIRED = operator.itemgetter(*REQUIRED_FIELDS)


def to_wire_all(bars: Iterable[Bar | Mapping[str, Any] | WireBar]) -> list[WireBar]:
    """Every bar of a ``write`` as sent (``to_wire`` of each, ``InvalidBarError`` for
    the first that can never be sent). A list of dicts all of text is typed in one C
    pass, the same bars (``bench/client_cost.py``: such a bar typed and encoded in
    0.24 us, 0.22 of 0.4.0's; 0.45 bar by bar); any other list, or a dict that is not
    all text, goes bar by bar."""
    if type(bars) is list and bars and type(bars[0]) is dict:
        try:
            typed: list[WireBar] = msgspec.convert(bars, _TEXT_BARS)
            return typed
        except msgspec.ValidationError:
            pass  # not all dicts of text: each one its own way
    return [to_wire(bar, i) for i, bar in enumerate(bars)]


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


RECORD_KINDS = ("options", "quotes", "trades", "fundamentals", "news")
"""The other kinds the store keeps (``POST /v1/<kind>``)."""


def to_records(
    items: Iterable[Any], *, defaults: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Items of another kind than bars as plain dicts for the wire: Core models
    (``OptionSnapshot``, ``Quote``, ``Trade``) or mappings of their fields; ``Decimal``s as
    their text in plain notation, times as RFC 3339 text (an aware time in UTC), dates
    as ``YYYY-MM-DD``; ``defaults`` fill fields an item does not have (an option
    chain's snapshot ``ts``). ``InvalidBarError`` for an item that is neither, or has
    a naive time (the store would refuse it)."""
    records: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if hasattr(item, "model_dump"):  # a pydantic model (Core's)
            fields = dict(item.model_dump())
        elif isinstance(item, Mapping):
            fields = dict(item)
        else:
            raise InvalidBarError(
                index, "$", f"a Core model or a mapping, not {type(item).__name__}"
            )
        for name, value in (defaults or {}).items():
            if fields.get(name) is None:
                fields[name] = value
        record: dict[str, Any] = {}
        for name, value in fields.items():
            if not isinstance(name, str):
                raise InvalidBarError(index, "$", "field names must be strings")
            record[name] = _record_value(value, index, name)
        try:  # what MessagePack cannot carry fails here, before anything is sent
            _records_encoder.encode(record)
        except (TypeError, OverflowError, ValueError) as exc:
            raise InvalidBarError(index, "$", f"cannot be sent: {exc}") from None
        records.append(record)
    return records


def _record_value(value: Any, index: int, name: str) -> Any:
    if type(value) is Decimal:
        return format(value, "f")
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidBarError(index, name, "must be timezone-aware")
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_record_value(v, index, name) for v in value]
    return value


def encode_records(provider: str, kind: str, records: list[dict[str, Any]]) -> bytes:
    """The MessagePack body of ``POST /v1/<kind>``."""
    return _records_encoder.encode({"provider": provider, kind: records})


_records_encoder = msgspec.msgpack.Encoder()
