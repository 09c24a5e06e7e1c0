"""POST /v1/bars bodies: decode (JSON or MessagePack), validate every bar, build rows.

Decoding goes straight into typed msgspec Structs; prices become ``Decimal``
whether sent as strings or numbers, so nothing passes through a float. A
request is all or nothing: every problem of every bar is collected (index,
field, message) and reported together, so a producer fixes a batch in one go.
A body msgspec cannot type is re-read loosely, field by field, for the same
complete report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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


class BarIn(msgspec.Struct):
    """One bar as sent: Core ``Bar`` fields (unknown extra fields are ignored)."""

    symbol: str
    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    resolution: str = "1d"
    delayed: bool = False


class IngestRequest(msgspec.Struct):
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
    JSON: (msgspec.json.Decoder(IngestRequest), msgspec.json.Decoder()),
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
        typing_errors = list(_typing_errors(index, bar))
        if typing_errors:
            errors.extend(typing_errors)
            continue
        typed = msgspec.convert(bar, BarIn, strict=True)
        errors.extend(BarError(index, f, m) for f, m in _check(typed, typed.symbol.strip().upper()))
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

    A cheap combined test passes the common, valid bar; only a bar that fails it
    goes through ``_check`` to find out what exactly is wrong (or that it is fine
    after all, e.g. a price written as ``1E+2``).
    """
    errors = _provider_errors(request.provider)
    provider = request.provider.strip()
    if not request.bars:
        errors.append(BarError(None, "bars", "must not be empty"))
    rows: list[BarRow] = []
    append = rows.append
    plain = _PLAIN_NUMBERS
    good_resolutions = _GOOD_RESOLUTIONS
    for index, bar in enumerate(request.bars):
        symbol = bar.symbol.strip().upper()
        o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
        so, sh, sl, sc, sv = str(o), str(h), str(lo), str(c), str(v)
        if not (
            plain(f"{so},{sh},{sl},{sc},{sv}")
            and bar.ts.utcoffset() is not None
            and EARLIEST <= bar.ts < LATEST
            and (bar.resolution in good_resolutions or _remember_resolution(bar.resolution))
            and 0 < len(symbol) <= MAX_SYMBOL_LENGTH
            and symbol.isprintable()
            and " " not in symbol
            and v >= 0
            and lo <= o
            and lo <= c
            and h >= o
            and h >= c
        ):
            problems = _check(bar, symbol)
            if problems:
                errors.extend(BarError(index, field, message) for field, message in problems)
                continue
        append(
            BarRow(
                provider,
                symbol,
                bar.resolution,
                bar.ts,
                so,
                sh,
                sl,
                sc,
                sv,
                bar.delayed,
                received_at,
            )
        )
    if errors:
        raise InvalidBody(errors)
    return _last_of_each_key(rows)


def _last_of_each_key(rows: list[BarRow]) -> list[BarRow]:
    # Rows of one request share received_at, so the sink could not tell which of
    # two copies is newer; the later one in the request wins here.
    latest = {(r.symbol, r.resolution, r.ts): r for r in rows}
    return rows if len(latest) == len(rows) else list(latest.values())


# Five decimals in plain notation within the column's domain (see MAX_* above).
_NUMBER = rf"-?\d{{1,{MAX_INTEGER_DIGITS}}}(?:\.\d{{1,{MAX_SCALE}}})?"
_PLAIN_NUMBERS = re.compile(rf"(?:{_NUMBER},){{4}}{_NUMBER}").fullmatch
_GOOD_RESOLUTIONS: set[str] = set()


def _remember_resolution(resolution: str) -> bool:
    if RESOLUTION.fullmatch(resolution) is None:
        return False
    if len(_GOOD_RESOLUTIONS) < 1000:  # a handful in practice; bounded regardless
        _GOOD_RESOLUTIONS.add(resolution)
    return True


def _check(bar: BarIn, symbol: str) -> list[tuple[str, str]]:
    """What is wrong with one bar: (field, message) pairs; empty when valid."""
    problems: list[tuple[str, str]] = []
    if not 0 < len(symbol) <= MAX_SYMBOL_LENGTH or not symbol.isprintable() or " " in symbol:
        problems.append(
            ("symbol", f"must be 1-{MAX_SYMBOL_LENGTH} printable characters without spaces")
        )
    if bar.ts.tzinfo is None or bar.ts.utcoffset() is None:
        problems.append(("ts", "must include a timezone (e.g. 2024-01-02T14:30:00Z)"))
    elif not EARLIEST <= bar.ts < LATEST:
        problems.append(("ts", f"must be from {EARLIEST.year} to {LATEST.year - 1}"))
    if not RESOLUTION.fullmatch(bar.resolution):
        problems.append(("resolution", "must be <n><s|m|h|d|w|mo>, e.g. 1m, 5m, 1h, 1d, 1mo"))
    bad: set[str] = set()
    for name in ("open", "high", "low", "close", "volume"):
        message = _number_problem(getattr(bar, name))
        if message:
            problems.append((name, message))
            bad.add(name)
    if "volume" not in bad and bar.volume < 0:
        problems.append(("volume", "must be >= 0"))
    if not bad.intersection(PRICE_FIELDS):
        lo, hi = min(bar.open, bar.close), max(bar.open, bar.close)
        if bar.low > lo:
            problems.append(("low", "must be <= min(open, close)"))
        if bar.high < hi:
            problems.append(("high", "must be >= max(open, close)"))
    return problems


def _number_problem(value: Decimal) -> str | None:
    if not value.is_finite():
        return "must be a finite number"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MAX_SCALE:
        return f"at most {MAX_SCALE} digits after the decimal point"
    if value and value.adjusted() >= MAX_INTEGER_DIGITS:
        return f"must be below 10^{MAX_INTEGER_DIGITS} in magnitude"
    return None
