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

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from market_data_store.storage import BarRow

MAX_SYMBOL_LENGTH = 32
MAX_PROVIDER_LENGTH = 64
MAX_SCALE = 18  # digits after the decimal point
MAX_INTEGER_DIGITS = 20  # digits before it: |x| < 10**20 (see migration 0003)
MAX_REPORTED_ERRORS = 100
PRICE_FIELDS = ("open", "high", "low", "close")
RESOLUTION = re.compile(r"[1-9][0-9]{0,3}(?:mo|s|m|h|d|w)")  # use fullmatch
# Bars before/after these are refused (and the table refuses them too): beyond them
# lie dates the database can store but drivers cannot read back.
EARLIEST = datetime(1800, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

JSON = "application/json"
MSGPACK = "application/msgpack"
MEDIA_TYPES = {
    JSON: JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}


class BarIn(msgspec.Struct, gc=False):
    """One bar as sent: Core ``Bar`` fields (unknown extra fields are ignored).

    Prices are typed loosely on purpose: a string, an integer or a float (MessagePack)
    as decoded, JSON numbers as their literal text; ``to_rows`` checks them."""

    symbol: str
    ts: datetime
    open: Any
    high: Any
    low: Any
    close: Any
    volume: Any
    resolution: str = "1d"
    delayed: bool = False


class IngestRequest(msgspec.Struct, gc=False):
    provider: str
    bars: list[BarIn]


class BarError(msgspec.Struct, omit_defaults=True):
    index: int | None
    field: str
    message: str


class InvalidBody(Exception):
    """Bad bars (422): every error found, in order."""

    def __init__(self, errors: list[BarError]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class MalformedBody(Exception):
    """Not parseable as the declared content type at all (400)."""


class TooManyBars(Exception):
    """More bars than one request may carry (413)."""


_DECODERS: dict[str, Any] = {
    # float_hook: a JSON number with a fraction or exponent arrives as its own text
    JSON: (
        msgspec.json.Decoder(IngestRequest, float_hook=str),
        msgspec.json.Decoder(float_hook=str),
    ),
    MSGPACK: (msgspec.msgpack.Decoder(IngestRequest), msgspec.msgpack.Decoder()),
}


_MALFORMED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode(body: bytes, media_type: str, max_bars: int) -> IngestRequest:
    """Typed decode; a body that does not type is read again loosely to report every
    problem of every bar (type errors, and rule errors of the bars that do type)."""
    typed, loose = _DECODERS[media_type]
    try:
        request: IngestRequest = typed.decode(body)
    except msgspec.ValidationError:
        pass  # well-formed but mistyped (or malformed further on): look closer below
    except _MALFORMED as exc:
        raise MalformedBody(f"body is not valid {media_type}: {_short(exc)}") from None
    else:
        _check_size(len(request.bars), max_bars)
        return request
    try:
        data = loose.decode(body)
    except _MALFORMED as exc:
        raise MalformedBody(f"body is not valid {media_type}: {_short(exc)}") from None
    bars = data.get("bars") if isinstance(data, dict) else None
    if isinstance(bars, list):
        _check_size(len(bars), max_bars)
    raise InvalidBody(_all_errors(data))


def _short(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _check_size(count: int, max_bars: int) -> None:
    if count > max_bars:
        raise TooManyBars(f"{count} bars in one request; at most {max_bars}")


_BAR_FIELDS = msgspec.structs.fields(BarIn)


def _all_errors(data: Any) -> list[BarError]:
    """Every problem of a body that did not decode into typed structs."""
    if not isinstance(data, dict):
        return [BarError(None, "$", "body must be an object with 'provider' and 'bars'")]
    provider = data.get("provider")
    errors = (
        _provider_errors(provider)
        if isinstance(provider, str)
        else [BarError(None, "provider", "required, a string")]
    )
    bars = data.get("bars")
    if not isinstance(bars, list):
        return [*errors, BarError(None, "bars", "required, a list of bars")]
    if not bars:
        errors.append(BarError(None, "bars", "must not be empty"))
    for index, bar in enumerate(bars):
        if not isinstance(bar, dict):
            errors.append(BarError(index, "$", "each bar must be an object"))
            continue
        if not all(isinstance(key, str) for key in bar):  # MessagePack maps may have others
            errors.append(BarError(index, "$", "field names must be strings"))
            continue
        typing_errors = list(_typing_errors(index, bar))
        if typing_errors:
            errors.extend(typing_errors)
            continue
        checked = _check(msgspec.convert(bar, BarIn, strict=True))
        if isinstance(checked, list):
            errors.extend(BarError(index, f, m) for f, m in checked)
    return errors or [BarError(None, "$", "body does not match the expected shape")]


def _typing_errors(index: int, bar: dict[str, Any]) -> Iterator[BarError]:
    for field in _BAR_FIELDS:
        if field.name not in bar:
            if field.required:
                yield BarError(index, field.name, "required")
            continue
        try:
            msgspec.convert(bar[field.name], field.type, strict=True)
        except msgspec.ValidationError as exc:
            yield BarError(index, field.name, _lower_first(str(exc)))


def _provider_errors(provider: str) -> list[BarError]:
    text = provider.strip()
    if 0 < len(text) <= MAX_PROVIDER_LENGTH and text.isprintable():
        return []
    return [BarError(None, "provider", f"must be 1-{MAX_PROVIDER_LENGTH} printable characters")]


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
    errors = _provider_errors(request.provider)
    provider = request.provider.strip()
    bars = request.bars
    if not bars:
        errors.append(BarError(None, "bars", "must not be empty"))
    rows: list[BarRow] = []
    append = rows.append
    plain = _plain_numbers(bars)
    if plain is None:
        for index, bar in enumerate(bars):
            _check_into(index, bar, provider, received_at, append, errors)
    else:
        good_resolutions, symbols, utc = _GOOD_RESOLUTIONS, _SYMBOLS, UTC
        earliest, latest = EARLIEST, LATEST
        texts, values = iter(plain[0]), iter(plain[1])  # five of each per bar, in order
        fives = zip(texts, texts, texts, texts, texts, strict=True)
        floats = zip(values, values, values, values, values, strict=True)
        for index, (bar, (o, h, lo, c, v), (fo, fh, fl, fc, fv)) in enumerate(
            zip(bars, fives, floats, strict=True)
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
    if errors:
        raise InvalidBody(errors)
    return _last_of_each_key(rows)


def _check_into(
    index: int,
    bar: BarIn,
    provider: str,
    received_at: datetime,
    append: Callable[[BarRow], None],
    errors: list[BarError],
) -> None:
    checked = _check(bar)
    if isinstance(checked, list):
        errors.extend(BarError(index, field, message) for field, message in checked)
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


def _check(bar: BarIn) -> Checked | list[tuple[str, str]]:
    """One bar, examined exactly: its stored form when valid, else what is wrong
    ((field, message) pairs)."""
    problems: list[tuple[str, str]] = []
    symbol = bar.symbol.strip().upper()
    if not 0 < len(symbol) <= MAX_SYMBOL_LENGTH or not symbol.isprintable() or " " in symbol:
        problems.append(
            ("symbol", f"must be 1-{MAX_SYMBOL_LENGTH} printable characters without spaces")
        )
    ts = bar.ts
    if ts.tzinfo is None or ts.utcoffset() is None:
        problems.append(("ts", "must include a timezone (e.g. 2024-01-02T14:30:00Z)"))
    elif not EARLIEST <= ts < LATEST:
        problems.append(("ts", f"must be from {EARLIEST.year} to {LATEST.year - 1}"))
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


_LIMIT = 10**MAX_INTEGER_DIGITS
_TOO_LARGE = f"must be below 10^{MAX_INTEGER_DIGITS} in magnitude"


def _decimal(value: Any) -> Decimal | str:
    """The exact value of a number as sent, or what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return "must be a number or a decimal string"
    if isinstance(value, int) and not -_LIMIT < value < _LIMIT:
        return _TOO_LARGE  # said without converting thousands of digits
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
