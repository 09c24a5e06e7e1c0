"""The domain of a bar: what its symbol, provider, resolution, timestamp and numbers may be.

Stated once, without HTTP: ingest checks every bar against these rules
(``check_bar``), the GET controller its query parameters, and migration 0003's CHECK
constraints (``storage/migrations``) hold the same domain for every writer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

MAX_SYMBOL_LENGTH = 32
MAX_PROVIDER_LENGTH = 64
MAX_SCALE = 18  # digits after the decimal point
MAX_INTEGER_DIGITS = 20  # digits before it: |x| < 10**20 (see migration 0003)
PRICE_FIELDS = ("open", "high", "low", "close")
# Number text (strings, and JSON numbers as sent): JSON's number grammar, ASCII only.
_UNSIGNED = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
_EXPONENT = r"(?:[eE][+-]?[0-9]+)?"
NUMBER = re.compile(rf"-?{_UNSIGNED}{_EXPONENT}", re.ASCII)
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
SYMBOL_RULE = (
    f"must be 1-{MAX_SYMBOL_LENGTH} printable ASCII characters without spaces "
    "(surrounding spaces are trimmed; tabs, newlines and other control characters refused)"
)
PROVIDER_RULE = (
    f"must be 1-{MAX_PROVIDER_LENGTH} printable ASCII characters "
    "(surrounding spaces are trimmed; tabs, newlines and other control characters refused)"
)
NOT_A_NUMBER = "must be a number or a decimal string"

# The rules of one field each, as JSON Schema (patterns in the dialect both ECMA-262 and
# Python read alike): exactly what ``symbol_ok``, ``provider_ok`` and ``check_bar`` refuse
# of one value on its own, for the OpenAPI document (``http/openapi.py``, the GET query
# parameters). Not said here: high/low against open and close, and what depends on a
# value's spelling beyond one pattern (ts's instant after its offset and rounding,
# digits after the point of a number or its magnitude written with an exponent).
SYMBOL_PATTERN = rf"^ *[!-~]{{1,{MAX_SYMBOL_LENGTH}}} *$"
PROVIDER_PATTERN = rf"^ *[!-~](?:[ -~]{{0,{MAX_PROVIDER_LENGTH - 2}}}[!-~])? *$"
RESOLUTION_PATTERN = rf"^(?:{RESOLUTION.pattern})$"
NUMBER_PATTERN = rf"^(?:{NUMBER.pattern})$"
# volume >= 0: no minus sign but on a zero (-0, -0.00e5 are 0)
VOLUME_PATTERN = rf"^(?:{_UNSIGNED}|-0(?:\.0+)?){_EXPONENT}$"


def number_schema(*, minimum: int | None = None) -> dict[str, Any]:
    """A price or volume: a decimal string, or a number below 10^MAX_INTEGER_DIGITS in
    magnitude (and at least ``minimum``)."""
    bound = 10**MAX_INTEGER_DIGITS
    low: dict[str, int] = {"exclusiveMinimum": -bound} if minimum is None else {"minimum": minimum}
    pattern = NUMBER_PATTERN if minimum is None else VOLUME_PATTERN
    assert minimum in (None, 0)  # VOLUME_PATTERN says >= 0
    return {
        "anyOf": [
            {"type": "string", "pattern": pattern},
            {"type": "number", **low, "exclusiveMaximum": bound},
        ]
    }


def bar_field_schemas() -> dict[str, dict[str, Any]]:
    """What JSON Schema can say of each field of a bar, by name (merged into the schema
    of ``BarIn``)."""
    return {
        "symbol": {"type": "string", "minLength": 1, "pattern": SYMBOL_PATTERN},
        "ts": {"type": "string", "format": "date-time"},
        "resolution": {"type": "string", "pattern": RESOLUTION_PATTERN},
        **{name: number_schema() for name in PRICE_FIELDS},
        "volume": number_schema(minimum=0),
    }


PROVIDER_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": PROVIDER_PATTERN}
# the rules between the prices of one bar
ORDER_RULES = ("must be <= min(open, close)", "must be >= max(open, close)")


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


class BarValues(Protocol):
    """What ``check_bar`` reads of a bar as sent (numbers as decoded: any type)."""

    @property
    def symbol(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def resolution(self) -> str: ...
    @property
    def open(self) -> Any: ...
    @property
    def high(self) -> Any: ...
    @property
    def low(self) -> Any: ...
    @property
    def close(self) -> Any: ...
    @property
    def volume(self) -> Any: ...


# (symbol, resolution, ts, open, high, low, close, volume) of a valid bar, as stored
Checked = tuple[str, str, datetime, str, str, str, str, str]
# (field, message) pairs: what is wrong with a bar
Problems = list[tuple[str, str]]


def check_bar(bar: BarValues) -> Checked | Problems:
    """One bar, examined exactly: its stored form when valid, else what is wrong."""
    problems: Problems = []
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
            problems.append(("low", ORDER_RULES[0]))
        if h < max(o, c):
            problems.append(("high", ORDER_RULES[1]))
    if problems:
        return problems
    texts = (_plain(values[name]) for name in ("open", "high", "low", "close", "volume"))
    to, th, tl, tc, tv = texts
    return (symbol, bar.resolution, ts.astimezone(UTC), to, th, tl, tc, tv)


_LIMIT = 10**MAX_INTEGER_DIGITS
_TOO_LARGE = f"must be below 10^{MAX_INTEGER_DIGITS} in magnitude"


def _decimal(value: Any) -> Decimal | str:
    """The exact value of a number as sent, or what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return NOT_A_NUMBER
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


def exact_number(value: Any) -> tuple[Decimal, str] | str:
    """A number as sent (a decimal string, a JSON number's text, an int or a
    MessagePack float) within the columns' domain: its exact value and the text to
    store (plain notation); else what is wrong with it."""
    decimal = _decimal(value)
    if isinstance(decimal, str):
        return decimal
    problem = _number_problem(decimal)
    return problem if problem is not None else (decimal, _plain(decimal))
