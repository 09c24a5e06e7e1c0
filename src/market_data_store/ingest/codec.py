"""POST /v1/bars bodies: decode (JSON or MessagePack), validate every bar, build rows.

Decoding goes straight into typed msgspec Structs. Prices stay the text they
were sent as: JSON strings as they are, JSON numbers as their literal text (a
``float_hook``: never a float), MessagePack numbers as their shortest repr.
The common bar is checked in one pass on that text (one regular expression for
all five numbers, float comparisons that decide exactly or defer, cached
symbols); only a bar that fails the cheap test is examined with ``Decimal`` to
find out exactly what is wrong, or that it is fine after all (e.g. ``1E+2``).

A request is all or nothing: every problem of every bar is collected (index,
field, message) and reported together, so a producer fixes a batch in one go.
A body msgspec cannot type is re-read loosely, field by field, for the same
complete report. Timestamps leave this module in UTC: PostgreSQL refuses
offsets beyond +-15:59 that RFC 3339 allows.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec

from market_data_store.storage import BarRow

MAX_SYMBOL_LENGTH = 32
MAX_PROVIDER_LENGTH = 64
MAX_SCALE = 18  # digits after the decimal point
MAX_INTEGER_DIGITS = 20  # digits before it: |x| < 10**20 (see migration 0003)
MAX_REPORTED_ERRORS = 100
# The most bytes one bar may take as sent (a valid bar is a few hundred, even with every
# character of its symbol escaped): a larger one is a 422 for that bar, never decoded.
# It also bounds the body: at most ENVELOPE_BYTES + MAX_BAR_BYTES per bar it may hold
# (counted before decoding), else 413. Small on purpose: the worst a bar can cost to
# type (a 1,000-digit JSON integer) grows with the square of its size. The envelope's
# allowance is generous (a body of no bars stays a 422 naming its mistakes), yet a
# millisecond of parsing at most.
MAX_BAR_BYTES = 1024
ENVELOPE_BYTES = 64 * 1024
PRICE_FIELDS = ("open", "high", "low", "close")
# Number text (strings, and JSON numbers as sent): JSON's number grammar, ASCII only.
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
RESOLUTION = re.compile(r"[1-9][0-9]{0,3}(?:mo|s|m|h|d|w)")  # use fullmatch
# Bars before/after these are refused (and the table refuses them too): beyond them
# lie dates the database can store but drivers cannot read back.
EARLIEST = datetime(1800, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# As decoded: a fraction beyond microseconds is rounded (…59.9999999Z of 2199 is 2200).
TS_RANGE_RULE = (
    "must be from 1800-01-01T00:00:00Z to before 2200-01-01T00:00:00Z "
    "(after rounding to microseconds)"
)

JSON = "application/json"
MSGPACK = "application/msgpack"
MEDIA_TYPES = {
    JSON: JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}


Number = str | int | float


class BarIn(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """One bar as sent: Core ``Bar`` fields, nothing else (an unknown field is a 422).

    Numbers: a string, an integer or a float (MessagePack), refused in C if anything
    else. From JSON they are decoded as ``_JsonBarIn``: JSON numbers as their literal
    text (a ``float_hook``, which msgspec applies to untyped values only), containers
    bounded by ``MAX_BAR_BYTES``; ``to_rows`` checks them."""

    symbol: str
    ts: datetime
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    resolution: str = "1d"  # Core's default
    delayed: bool = False


class _JsonBarIn(BarIn, gc=False, forbid_unknown_fields=True):
    open: Any
    high: Any
    low: Any
    close: Any
    volume: Any


class IngestRequest(msgspec.Struct, gc=False):
    provider: str
    bars: list[BarIn]


class BarError(msgspec.Struct, omit_defaults=True):
    index: int | None
    field: str
    message: str


class InvalidBody(Exception):
    """Bad bars (422): the first ``MAX_REPORTED_ERRORS`` errors found, in order, and
    how many there are in all (``total``)."""

    def __init__(self, errors: list[BarError], total: int | None = None) -> None:
        self.total = len(errors) if total is None else total
        super().__init__(f"{self.total} invalid field(s)")
        self.errors = errors[:MAX_REPORTED_ERRORS]


class MalformedBody(Exception):
    """Not parseable as the declared content type at all (400)."""


class TooManyBars(Exception):
    """More bars than one request may carry (413)."""


class _Errors:
    """Errors in order: the first ``MAX_REPORTED_ERRORS`` kept, the rest only counted."""

    def __init__(self) -> None:
        self.kept: list[BarError] = []
        self.total = 0

    def add(self, index: int | None, field: str, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_ERRORS:
            self.kept.append(BarError(index, field, message))

    def __bool__(self) -> bool:
        return self.total > 0


class _Envelope(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    provider: str
    bars: list[msgspec.Raw]


_BAR_FIELDS = msgspec.structs.fields(BarIn)
_BAR_FIELD_NAMES = tuple(f.name for f in _BAR_FIELDS)
_TOP_FIELDS = ("provider", "bars")
_MALFORMED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# Bars typed, validated and turned into rows per step of ``rows_in_steps``: about a
# millisecond of CPU (5-15 us a bar), so whoever drives the steps can let other work
# run between them (the event loop answers probes between two steps).
CHUNK_BARS = 128
# The structure a JSON body of n bars may hold, counted before decoding: a bar is one
# object of at most 9 fields (8 commas) plus the comma before the next one.
_COMMAS_PER_BAR = 12  # 9 needed; the rest for commas inside symbols and providers
_COMMAS_SLACK = 64


class _Codec:
    """Decoders of one media type (JSON numbers with a fraction or exponent arrive as
    their own text: ``float_hook=str``)."""

    def __init__(self, media_type: str, max_bars: int) -> None:
        self.json = media_type == JSON
        self.max_bars = max_bars
        self.provider: Any = (msgspec.json if self.json else msgspec.msgpack).Decoder(str)
        if self.json:
            self.envelope: Any = msgspec.json.Decoder(_Envelope)
            self.bars: Any = msgspec.json.Decoder(list[_JsonBarIn], float_hook=str)
            self.fields: Any = msgspec.json.Decoder(dict[str, msgspec.Raw])
            self.field: dict[str, Any] = {
                f.name: msgspec.json.Decoder(Any if f.type is Number else f.type, float_hook=str)
                for f in _BAR_FIELDS
            }
            self.raw: Any = msgspec.json.Decoder(msgspec.Raw)
        else:
            # MessagePack states an array's length first: the cap is checked before a
            # single element is decoded.
            bars_type = Annotated[list[msgspec.Raw], msgspec.Meta(max_length=max_bars)]
            envelope = msgspec.defstruct(
                "_Envelope",
                [("provider", str), ("bars", bars_type)],
                forbid_unknown_fields=True,
                gc=False,
            )
            self.envelope = msgspec.msgpack.Decoder(envelope)
            self.bars = msgspec.msgpack.Decoder(list[BarIn])
            self.fields = msgspec.msgpack.Decoder(dict[Any, msgspec.Raw])
            self.field = {f.name: msgspec.msgpack.Decoder(f.type) for f in _BAR_FIELDS}
            self.raw = msgspec.msgpack.Decoder(msgspec.Raw)

    def typed(self, raws: list[msgspec.Raw]) -> list[BarIn]:
        """The bars typed in one call (``ValidationError`` if any is over
        ``MAX_BAR_BYTES``: each is then examined on its own, and that one not decoded)."""
        if max(map(len, raws)) > MAX_BAR_BYTES:
            raise msgspec.ValidationError(_TOO_BIG)
        return self.bars.decode(self.join(raws))  # type: ignore[no-any-return]

    def join(self, raws: list[msgspec.Raw]) -> bytes:
        """One array of the given elements, in the codec's format."""
        if self.json:
            return b"[" + b",".join(raws) + b"]"
        n = len(raws)
        header = (
            bytes([0x90 | n])
            if n < 16
            else (b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big"))
        )
        return header + b"".join(raws)

    def array_length(self, raw: msgspec.Raw) -> int | None:
        """The length of a MessagePack array as its header states it (None if not one)."""
        data = bytes(memoryview(raw)[:5])
        if not data:
            return None
        first = data[0]
        if 0x90 <= first <= 0x9F:
            return first & 0x0F
        if first == 0xDC and len(data) >= 3:
            return int.from_bytes(data[1:3], "big")
        if first == 0xDD and len(data) >= 5:
            return int.from_bytes(data[1:5], "big")
        return None


_CODECS: dict[tuple[str, int], _Codec] = {}


def _codec(media_type: str, max_bars: int) -> _Codec:
    codec = _CODECS.get((media_type, max_bars))
    if codec is None:
        codec = _CODECS[(media_type, max_bars)] = _Codec(media_type, max_bars)
    return codec


def decode(body: bytes | bytearray, media_type: str, max_bars: int) -> IngestRequest:
    """Decode a body into typed bars, never more than the cap allows.

    A JSON body is first bounded without decoding it (a C-speed count of ``{`` and
    ``,``: more objects than ``max_bars`` + 1, or more commas than ``max_bars`` bars
    may hold, is a 413 at once); a MessagePack body states the length of ``bars``
    before its elements. Then the envelope is decoded with each bar left as raw
    bytes, and the bars are typed ``CHUNK_BARS`` at a time (each decoder call is
    short: ``rows_in_steps`` yields between chunks, so the event loop runs). A bar
    that does not type is read again field by field; every problem of every bar is reported (type
    errors, unknown fields, and the rule errors of the bars that do type)."""
    codec = _codec(media_type, max_bars)
    if codec.json:
        _prescan_json(body, max_bars)
    errors = _Errors()
    provider, raws = _open(codec, body, errors)
    if errors or raws is None:
        if raws is not None and not raws:
            errors.add(None, "bars", "must not be empty")
        _bars_errors(codec, raws or [], errors)
        raise InvalidBody(errors.kept, errors.total)
    assert isinstance(provider, str)
    bars: list[BarIn] = []
    for start in range(0, len(raws), CHUNK_BARS):
        chunk = raws[start : start + CHUNK_BARS]
        try:
            bars.extend(codec.typed(chunk))
        except (msgspec.ValidationError, *_MALFORMED):
            _provider_errors_into(provider, errors)
            _bars_errors(codec, raws, errors)
            raise InvalidBody(errors.kept, errors.total) from None
    return IngestRequest(provider, bars)


def _prescan_json(body: bytes | bytearray, max_bars: int) -> None:
    """413 for a JSON body holding more objects, or more commas, than ``max_bars``
    bars may: counted in C (in slices, each call short), nothing decoded. Braces and
    commas inside strings count too: a body close to the cap with many of them in
    its symbols may be refused (documented)."""
    bound = JsonBound(max_bars)
    for start in range(0, len(body), PRESCAN_STEP):
        bound.feed(body, start, start + PRESCAN_STEP)


PRESCAN_STEP = 1 << 20  # bytes counted per call (about a millisecond)


class JsonBound:
    """The pre-count of a JSON body, fed in pieces (as it arrives, or in slices):
    ``feed`` raises ``TooManyBars`` as soon as the body holds more objects than
    ``max_bars`` + 1 (the envelope), or more commas than ``max_bars`` bars may hold."""

    def __init__(self, max_bars: int) -> None:
        self.max_bars = max_bars
        self.max_commas = _COMMAS_PER_BAR * max_bars + _COMMAS_SLACK
        self.objects = self.commas = self.size = 0

    def feed(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> None:
        """Count ``data[start:end]`` (without copying it)."""
        self.objects += data.count(b"{", start, end)
        self.commas += data.count(b",", start, end)
        self.size += len(data) - start if end is None else min(end, len(data)) - start
        # every bar is an object: the envelope, then at most objects - 1 bars so far
        check_body_size(self.size, max(self.objects - 1, 0))
        if self.objects > self.max_bars + 1:
            raise TooManyBars(
                f"{self.objects} objects in the body: more bars than one request may carry; "
                f"at most {self.max_bars}"
            )
        if self.commas > self.max_commas:
            raise TooManyBars(
                f"{self.commas} commas in the body: more values than {self.max_bars} bars "
                f"may hold; at most {self.max_bars} bars"
            )


def check_body_size(size: int, bars: int) -> None:
    """413 for a body larger than ``bars`` bars (as counted before decoding) may be:
    ``ENVELOPE_BYTES`` plus ``MAX_BAR_BYTES`` per bar."""
    if size > ENVELOPE_BYTES + bars * MAX_BAR_BYTES:
        raise TooManyBars(
            f"body of {size} bytes for at most {bars} bar(s): a bar may take at most "
            f"{MAX_BAR_BYTES} bytes, the rest of the body {ENVELOPE_BYTES}"
        )


def msgpack_bars_bound(body: bytes | bytearray) -> int:
    """The length of ``bars`` as a MessagePack body's header states it, read without
    decoding anything (0 when it cannot be found in the map's first entries: such a
    body holds no bar, and may only be small). Only fixed-size values, strings and
    binaries may precede ``bars``; a valid body's ``provider`` is a string."""
    view = memoryview(body)
    size = len(body)
    if not size or (not 0x80 <= body[0] <= 0x8F and body[0] not in (0xDE, 0xDF)):
        return 0
    entries, at = _msgpack_header(body, 0)
    for _ in range(min(entries, 8) * 2):  # keys and values, in order
        if at >= size:
            return 0
        first = body[at]
        if bytes(view[at : at + 5]) == b"\xa4bars" and at + 5 < size:
            length, _ = _msgpack_header(body, at + 5)
            return length if body[at + 5] in _ARRAY_HEADS else 0
        if first in _SIZED or 0xA0 <= first <= 0xBF:  # a string or binary: skip it
            length, at = _msgpack_header(body, at)
            at += length
        elif first in _FIXED:
            at += _FIXED[first]
        elif first <= 0x7F or first >= 0xE0 or first in (0xC0, 0xC2, 0xC3):  # ints, nil, bools
            at += 1
        else:
            return 0
    return 0


_ARRAY_HEADS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}  # str8-32, bin8-32
# ints, floats, fixext: their head and value
_FIXED = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,
          0xCA: 5, 0xCB: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}  # fmt: skip
_WIDTHS = {0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4, **_SIZED}


def _msgpack_header(body: bytes | bytearray, at: int) -> tuple[int, int]:
    """The length a container, string or binary head at ``at`` states, and where its
    content begins (0 and ``at`` + 1 for anything else or a truncated head)."""
    first = body[at]
    if 0x80 <= first <= 0x9F or 0xA0 <= first <= 0xBF:
        return first & (0x0F if first < 0xA0 else 0x1F), at + 1
    width = _WIDTHS.get(first)
    if width is None or at + 1 + width > len(body):
        return 0, at + 1
    return int.from_bytes(body[at + 1 : at + 1 + width], "big"), at + 1 + width


def _open(
    codec: _Codec, body: bytes | bytearray, errors: _Errors
) -> tuple[str | None, list[msgspec.Raw] | None]:
    """The envelope with each bar left as raw bytes (views of ``body``): its provider
    and bars, the bars' count checked against the cap; errors of its shape added. A
    MessagePack body is first bounded by the length its ``bars`` header states (a
    JSON body was by ``JsonBound``)."""
    if not codec.json:
        check_body_size(len(body), min(msgpack_bars_bound(body), codec.max_bars + 1))
    try:
        envelope = codec.envelope.decode(body)
    except msgspec.ValidationError:
        provider, raws = _envelope_errors(codec, body, errors)
    except _MALFORMED as exc:
        name = JSON if codec.json else MSGPACK
        raise MalformedBody(f"body is not valid {name}: {_short(exc)}") from None
    else:
        provider, raws = envelope.provider, envelope.bars
        _provider_errors_into(provider, errors)
    if raws is not None:
        _check_size(len(raws), codec.max_bars)
    return provider, raws


Steps = Generator[None, None, list[BarRow]]


def rows_in_steps(
    body: bytes | bytearray,
    media_type: str,
    max_bars: int,
    received_at: datetime,
    *,
    counted: bool = False,
) -> Steps:
    """What ``to_rows(decode(...))`` answers (the rows, or ``MalformedBody``,
    ``TooManyBars``, ``InvalidBody`` with the same errors), computed in steps: the
    generator yields after each ``CHUNK_BARS`` bars (and each slice of the JSON
    pre-count, unless the caller ``counted`` the body with ``JsonBound`` already),
    so no step holds the CPU for more than about a millisecond; the rows are its
    return value. Only the envelope is decoded in one call (C, a few ms for the
    largest body).

    Memory: the body, one ``Raw`` view per bar, and the rows; each chunk's typed bars
    are dropped once its rows are built, and no rows are kept once an error is
    found."""
    codec = _codec(media_type, max_bars)
    if codec.json and not counted:
        bound = JsonBound(max_bars)
        for start in range(0, len(body), PRESCAN_STEP):
            bound.feed(body, start, start + PRESCAN_STEP)
            yield
    errors = _Errors()
    provider, raws = _open(codec, body, errors)
    if raws is not None and not raws:
        errors.add(None, "bars", "must not be empty")
    yield
    text = trim(provider) if provider is not None else ""
    rows: list[BarRow] = []
    latest: dict[tuple[str, str, datetime], BarRow] = {}
    for start in range(0, len(raws or ()), CHUNK_BARS):
        assert raws is not None
        chunk = raws[start : start + CHUNK_BARS]
        new: list[BarRow] = []
        try:
            typed: list[BarIn] = codec.typed(chunk)
        except (msgspec.ValidationError, *_MALFORMED):
            for offset, raw in enumerate(chunk):
                bar = _bar_or_errors(codec, raw, start + offset, errors)
                if bar is not None:
                    _check_into(start + offset, bar, text, received_at, new.append, errors)
        else:
            _rows_into(typed, start, text, received_at, new.append, errors)
            del typed
        if errors:
            rows.clear()
            latest.clear()
        else:
            rows += new
            for row in new:
                latest[(row.symbol, row.resolution, row.ts)] = row
        del new, chunk
        yield
    if errors or raws is None:
        raise InvalidBody(errors.kept, errors.total)
    # a key sent twice keeps its last bar (see ``_last_of_each_key``)
    return rows if len(latest) == len(rows) else list(latest.values())


def rows_of(
    body: bytes | bytearray, media_type: str, max_bars: int, received_at: datetime
) -> list[BarRow]:
    """``rows_in_steps`` run to the end in one go."""
    steps = rows_in_steps(body, media_type, max_bars, received_at)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _short(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _check_size(count: int, max_bars: int) -> None:
    if count > max_bars:
        raise TooManyBars(f"{count} bars in one request; at most {max_bars}")


def _envelope_errors(
    codec: _Codec, body: bytes | bytearray, errors: _Errors
) -> tuple[str | None, list[msgspec.Raw] | None]:
    """The envelope, read field by field: its errors, and what of it is usable."""
    try:
        fields = codec.fields.decode(body)
    except msgspec.ValidationError:
        try:  # not an object: but well-formed at all? (a 400 if not)
            codec.raw.decode(body)
        except _MALFORMED as exc:
            name = JSON if codec.json else MSGPACK
            raise MalformedBody(f"body is not valid {name}: {_short(exc)}") from None
        errors.add(None, "$", "body must be an object with 'provider' and 'bars'")
        return None, None
    except _MALFORMED as exc:
        raise MalformedBody(
            f"body is not valid {JSON if codec.json else MSGPACK}: {_short(exc)}"
        ) from None
    for name in fields:
        if name not in _TOP_FIELDS:
            errors.add(None, str(name), f"unknown field; accepted: {', '.join(_TOP_FIELDS)}")
    provider: str | None = None
    raw_provider = fields.get("provider")
    if raw_provider is None:
        errors.add(None, "provider", "required, a string")
    else:
        try:  # typed: a container is refused without being decoded
            provider = codec.provider.decode(raw_provider)
        except msgspec.ValidationError:
            errors.add(None, "provider", "required, a string")
        else:
            assert provider is not None
            _provider_errors_into(provider, errors)
    raw_bars = fields.get("bars")
    raws: list[msgspec.Raw] | None = None
    if raw_bars is not None:
        if not codec.json:
            length = codec.array_length(raw_bars)
            if length is not None:
                _check_size(length, codec.max_bars)
        with contextlib.suppress(msgspec.ValidationError):
            raws = (msgspec.json if codec.json else msgspec.msgpack).decode(
                raw_bars, type=list[msgspec.Raw]
            )
    if raws is None:
        errors.add(None, "bars", "required, a list of bars")
    return provider, raws


def _bars_errors(codec: _Codec, raws: list[msgspec.Raw], errors: _Errors) -> None:
    """Every problem of every bar, in order, one chunk of typed bars at a time."""
    for start in range(0, len(raws), CHUNK_BARS):
        chunk = raws[start : start + CHUNK_BARS]
        try:
            typed: list[BarIn] | None = codec.typed(chunk)
        except (msgspec.ValidationError, *_MALFORMED):
            typed = None
        for offset, raw in enumerate(chunk):
            index = start + offset
            bar = typed[offset] if typed is not None else _bar_or_errors(codec, raw, index, errors)
            if bar is not None:
                checked = _check(bar)
                if isinstance(checked, list):
                    for field, message in checked:
                        errors.add(index, field, message)


def _bar_or_errors(codec: _Codec, raw: msgspec.Raw, index: int, errors: _Errors) -> BarIn | None:
    """One bar typed, or its errors (unknown fields, missing and mistyped ones) added."""
    if len(raw) > MAX_BAR_BYTES:
        errors.add(index, "$", _TOO_BIG)
        return None
    try:
        bar: BarIn = codec.bars.decode(codec.join([raw]))[0]
    except (msgspec.ValidationError, *_MALFORMED):
        pass
    else:
        return bar
    try:
        fields = codec.fields.decode(raw)
    except (msgspec.ValidationError, *_MALFORMED):
        errors.add(index, "$", "each bar must be an object")
        return None
    if not all(isinstance(key, str) for key in fields):  # MessagePack maps may have others
        errors.add(index, "$", "field names must be strings")
        return None
    typed: dict[str, Any] = {}
    for name in fields:
        if name not in _BAR_FIELD_NAMES:
            errors.add(index, name, f"unknown field; accepted: {', '.join(_BAR_FIELD_NAMES)}")
    for field in _BAR_FIELDS:
        raw_value = fields.get(field.name)
        if raw_value is None:
            if field.required:
                errors.add(index, field.name, "required")
            continue
        if codec.json and field.type is Number and bytes(raw_value)[:1] in (b"[", b"{"):
            errors.add(index, field.name, _NOT_A_NUMBER)  # not decoded (see _JsonBarIn)
            continue
        try:  # typed in C: a container where a scalar belongs is refused, not decoded
            typed[field.name] = codec.field[field.name].decode(raw_value)
        except (msgspec.ValidationError, *_MALFORMED) as exc:
            errors.add(index, field.name, _lower_first(_short(exc)))
    # the rules of the fields that did type (placeholders stand in for the others)
    checked = _check(msgspec.structs.replace(_PLACEHOLDER, **typed))
    all_prices = all(name in typed for name in PRICE_FIELDS)
    if isinstance(checked, list):
        for field_name, message in checked:
            if field_name in typed and (all_prices or message not in _ORDER_RULES):
                errors.add(index, field_name, message)
    return None


_TOO_BIG = f"a bar may take at most {MAX_BAR_BYTES} bytes; not decoded"
_PLACEHOLDER = BarIn("X", datetime(2000, 1, 1, tzinfo=UTC), "0", "0", "0", "0", "0")
_ORDER_RULES = ("must be <= min(open, close)", "must be >= max(open, close)")


def _is_text(value: str) -> bool:
    """Printable ASCII (what a symbol or provider may hold, once trimmed)."""
    return value.isascii() and value.isprintable()


def _provider_errors_into(provider: str, errors: _Errors) -> None:
    if not provider_ok(provider):
        errors.add(None, "provider", PROVIDER_RULE)


def _provider_errors(provider: str) -> list[BarError]:
    errors = _Errors()
    _provider_errors_into(provider, errors)
    return errors.kept


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class AcceptClock:
    """Acceptance times that never go backwards in this process, even if the wall
    clock does (NTP step): the newest accepted version of a bar must win. Across
    replicas, ordering is as good as their clocks' synchronisation."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


accept_clock = AcceptClock()


def to_rows(request: IngestRequest, received_at: datetime) -> list[BarRow]:
    """Validate every bar (all errors collected) and build the rows to store; a key
    sent twice in one request keeps its last bar.

    The numbers of the whole request are checked at once (``_plain_numbers``);
    then a cheap test per bar passes the common, valid one: a known symbol, a
    timestamp in range, a known resolution, and float values that put low and high
    around open and close. Float conversion is monotonic, so a strict float
    inequality holds exactly; a tie holds exactly when the texts are equal. Any
    other tie, and anything unusual, goes through ``_check``, which decides with
    ``Decimal`` (so does every bar of a request whose numbers are not all plain).
    """
    errors = _Errors()
    _provider_errors_into(request.provider, errors)
    provider = trim(request.provider)
    bars = request.bars
    if not bars:
        errors.add(None, "bars", "must not be empty")
    rows: list[BarRow] = []
    _rows_into(bars, 0, provider, received_at, rows.append, errors)
    if errors:
        raise InvalidBody(errors.kept, errors.total)
    return _last_of_each_key(rows)


def _rows_into(
    bars: list[BarIn],
    first: int,
    provider: str,
    received_at: datetime,
    append: Callable[[BarRow], None],
    errors: _Errors,
) -> None:
    """The rows of valid ``bars`` appended, the errors of the others added
    (``first``: the index of ``bars[0]`` in the request)."""
    plain = _plain_numbers(bars)
    if plain is None:
        for index, bar in enumerate(bars, first):
            _check_into(index, bar, provider, received_at, append, errors)
    else:
        good_resolutions, symbols, utc = _GOOD_RESOLUTIONS, _SYMBOLS, UTC
        earliest, latest = EARLIEST, LATEST
        texts, values = iter(plain[0]), iter(plain[1])  # five of each per bar, in order
        fives = zip(texts, texts, texts, texts, texts, strict=True)
        floats = zip(values, values, values, values, values, strict=True)
        for index, (bar, (o, h, lo, c, v), (fo, fh, fl, fc, fv)) in enumerate(
            zip(bars, fives, floats, strict=True), first
        ):
            symbol = symbols.get(bar.symbol)
            ts = bar.ts if bar.ts.tzinfo is utc else _utc(bar.ts)
            if (
                symbol is not None
                and ts is not None
                and earliest <= ts < latest
                and bar.resolution in good_resolutions
                and fv >= 0
                and (fl < fo or lo == o)
                and (fl < fc or lo == c)
                and (fh > fo or h == o)
                and (fh > fc or h == c)
            ):
                append(
                    BarRow(
                        provider,
                        symbol,
                        bar.resolution,
                        ts,
                        o,
                        h,
                        lo,
                        c,
                        v,
                        bar.delayed,
                        received_at,
                    )
                )
            else:
                _check_into(index, bar, provider, received_at, append, errors)


def _check_into(
    index: int,
    bar: BarIn,
    provider: str,
    received_at: datetime,
    append: Callable[[BarRow], None],
    errors: _Errors,
) -> None:
    checked = _check(bar)
    if isinstance(checked, list):
        for field, message in checked:
            errors.add(index, field, message)
    else:
        append(BarRow(provider, *checked, bar.delayed, received_at))


def _utc(ts: datetime) -> datetime | None:
    """``ts`` in UTC; None when it has no offset or is out of range (``_check`` says
    which). Compared before converted: near year 1 or 9999 converting overflows."""
    if ts.utcoffset() is None or not EARLIEST <= ts < LATEST:
        return None
    return ts.astimezone(UTC)


_FLOATS = msgspec.json.Decoder(list[float])
_NOT_PLAIN = "eE+ \t\r\n"  # what JSON numbers may hold and plain decimals may not
_MAX_PLAIN_LENGTH = 19  # no fraction beyond MAX_SCALE digits, nothing reaching 10^20


def _plain_numbers(bars: list[BarIn]) -> tuple[list[str], list[float]] | None:
    """The five numbers of every bar as text and as float, when each one is a plain
    decimal within the column's domain; None otherwise.

    One pass over the request in C: the numbers are joined into one JSON array
    (JSON's number grammar without exponents is the plain decimal grammar, bar
    ``-0``-style details PostgreSQL reads the same), parsed as floats in one call,
    and each is at most 19 characters long, so it cannot have more than 18 digits
    after the point nor reach 10^20. A comma inside a value shows as a wrong count.
    """
    if not bars:
        return None
    try:
        joined = ",".join([f"{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in bars])
    except RecursionError:  # a price nested too deeply to print: ``_check`` refuses it
        return None
    if any(character in joined for character in _NOT_PLAIN):
        return None
    try:
        values = _FLOATS.decode(f"[{joined}]")
    except msgspec.DecodeError:
        return None
    texts = joined.split(",")
    if len(values) != 5 * len(bars) or len(texts) != len(values):
        return None
    if max(map(len, texts)) > _MAX_PLAIN_LENGTH:
        return None
    return texts, values


def _last_of_each_key(rows: list[BarRow]) -> list[BarRow]:
    # Rows of one request share received_at, so the sink could not tell which of
    # two copies is newer; the later one in the request wins here.
    latest = {(r.symbol, r.resolution, r.ts): r for r in rows}
    return rows if len(latest) == len(rows) else list(latest.values())


_GOOD_RESOLUTIONS: set[str] = set()
_SYMBOLS: dict[str, str] = {}  # symbol as sent -> as stored, for valid symbols only
_MAX_CACHED = 100_000

# (symbol, resolution, ts, open, high, low, close, volume) of a valid bar
Checked = tuple[str, str, datetime, str, str, str, str, str]


SYMBOL_RULE = (
    f"must be 1-{MAX_SYMBOL_LENGTH} printable ASCII characters without spaces "
    "(surrounding spaces are trimmed; tabs, newlines and other control characters refused)"
)
PROVIDER_RULE = (
    f"must be 1-{MAX_PROVIDER_LENGTH} printable ASCII characters "
    "(surrounding spaces are trimmed; tabs, newlines and other control characters refused)"
)


def trim(sent: str) -> str:
    """A symbol or provider without its surrounding spaces (U+0020 only: any other
    character stays, to be refused by the printable-ASCII rule)."""
    return sent.strip(" ")


def symbol_ok(sent: str, symbol: str) -> bool:
    """Whether a symbol as sent (``symbol``: ``trim``-med and upper-cased) is
    acceptable: printable ASCII only, so no look-alike letters, no case mapping that
    changes length, no control character."""
    return (
        sent.isascii()
        and 0 < len(symbol) <= MAX_SYMBOL_LENGTH
        and symbol.isprintable()
        and " " not in symbol
    )


def provider_ok(sent: str) -> bool:
    text = trim(sent)
    return sent.isascii() and 0 < len(text) <= MAX_PROVIDER_LENGTH and text.isprintable()


def _check(bar: BarIn) -> Checked | list[tuple[str, str]]:
    """One bar, examined exactly: its stored form when valid, else what is wrong
    ((field, message) pairs)."""
    problems: list[tuple[str, str]] = []
    symbol = trim(bar.symbol).upper()
    if not symbol_ok(bar.symbol, symbol):
        problems.append(("symbol", SYMBOL_RULE))
    ts = bar.ts
    if ts.tzinfo is None or ts.utcoffset() is None:
        problems.append(("ts", "must include a timezone (e.g. 2024-01-02T14:30:00Z)"))
    elif not EARLIEST <= ts < LATEST:
        problems.append(("ts", TS_RANGE_RULE))
    if not RESOLUTION.fullmatch(bar.resolution):
        problems.append(("resolution", "must be <n><s|m|h|d|w|mo>, e.g. 1m, 5m, 1h, 1d, 1mo"))
    values: dict[str, Decimal] = {}
    for name in ("open", "high", "low", "close", "volume"):
        value = _decimal(getattr(bar, name))
        message = value if isinstance(value, str) else _number_problem(value)
        if message is None:
            assert isinstance(value, Decimal)
            values[name] = value
        else:
            problems.append((name, message))
    volume = values.get("volume")
    if volume is not None and volume < 0:
        problems.append(("volume", "must be >= 0"))
    if all(name in values for name in PRICE_FIELDS):
        o, h, lo, c = (values[name] for name in ("open", "high", "low", "close"))
        if lo > min(o, c):
            problems.append(("low", "must be <= min(open, close)"))
        if h < max(o, c):
            problems.append(("high", "must be >= max(open, close)"))
    if problems:
        return problems
    # remembered for the fast path; bounded (a few thousand in practice)
    if len(_SYMBOLS) >= _MAX_CACHED:
        _SYMBOLS.clear()
    _SYMBOLS[bar.symbol] = symbol
    if len(_GOOD_RESOLUTIONS) < 1000:
        _GOOD_RESOLUTIONS.add(bar.resolution)
    texts = (_plain(values[name]) for name in ("open", "high", "low", "close", "volume"))
    to, th, tl, tc, tv = texts
    return (symbol, bar.resolution, ts.astimezone(UTC), to, th, tl, tc, tv)


_NOT_A_NUMBER = "must be a number or a decimal string"
_LIMIT = 10**MAX_INTEGER_DIGITS
_TOO_LARGE = f"must be below 10^{MAX_INTEGER_DIGITS} in magnitude"


def _decimal(value: Any) -> Decimal | str:
    """The exact value of a number as sent, or what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return _NOT_A_NUMBER
    if isinstance(value, int) and not -_LIMIT < value < _LIMIT:
        return _TOO_LARGE  # said without converting thousands of digits
    if isinstance(value, str) and not NUMBER.fullmatch(value):
        return "must be a decimal number (JSON number syntax, e.g. 12.5, -0.25, 1E+3)"
    try:
        # a float only ever comes from MessagePack: its shortest repr is what was meant
        return Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, ValueError):
        return "must be a decimal number"


def _plain(value: Decimal) -> str:
    """Positional notation (1E+2 -> 100): the text the fast path would have stored."""
    return format(value, "f")


def _number_problem(value: Decimal) -> str | None:
    if not value.is_finite():
        return "must be a finite number"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_SCALE:
        return f"at most {MAX_SCALE} digits after the decimal point"
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        return _TOO_LARGE
    return None
