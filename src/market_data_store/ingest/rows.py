"""The rows of a body: its bars typed a chunk at a time, checked, built into ``BarRow``s.

The common bar is checked in one pass on the text of its numbers (one C parse of
all the numbers of a chunk, float comparisons that decide exactly or defer, known
symbols and resolutions); only a bar that fails the cheap test is examined with
``Decimal`` (``rules.check_bar``) to find out exactly what is wrong, or that it is
fine after all (e.g. ``1E+2``).

A request is all or nothing: every problem of every bar is collected (index,
field, message) and reported together, so a producer fixes a batch in one go.
Timestamps leave this module in UTC: PostgreSQL refuses offsets beyond +-15:59 that
RFC 3339 allows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime
from operator import attrgetter

import msgspec

from market_data_store.storage import DEFAULT_TENANT, BarRow

from .bounds import PRESCAN_STEP, JsonBound
from .codec import MALFORMED, BarIn, Codec, bar_or_errors, open_envelope
from .errors import Errors, InvalidBodyError
from .origins import one_per_key
from .rules import EARLIEST, LATEST, check_bar, trim

# Bars typed, validated and turned into rows per step of ``rows_in_steps``: about a
# millisecond of CPU (5-15 us a bar), so whoever drives the steps can let other work
# run between them (the event loop answers probes between two steps).
CHUNK_BARS = 128
MAX_KNOWN_SYMBOLS = 100_000
MAX_KNOWN_RESOLUTIONS = 1000

Steps = Generator[None, None, list[BarRow]]
_ROW_KEY = attrgetter("symbol", "resolution", "ts")  # of one request's rows


class KnownValues:
    """Symbols and resolutions of bars found valid before: the fast path's test.
    Bounded (a few thousand in practice): past ``MAX_KNOWN_SYMBOLS`` the symbols are
    forgotten at once; past ``MAX_KNOWN_RESOLUTIONS`` no resolution is added."""

    __slots__ = ("resolutions", "symbols")

    def __init__(self) -> None:
        self.symbols: dict[str, str] = {}  # symbol as sent -> as stored
        self.resolutions: set[str] = set()

    def remember(self, sent: str, symbol: str, resolution: str) -> None:
        """A valid bar's symbol (as sent and as stored) and resolution."""
        if len(self.symbols) >= MAX_KNOWN_SYMBOLS:
            self.symbols.clear()
        self.symbols[sent] = symbol
        if len(self.resolutions) < MAX_KNOWN_RESOLUTIONS:
            self.resolutions.add(resolution)


def rows_in_steps(
    codec: Codec,
    body: bytes | bytearray,
    received_at: datetime,
    known: KnownValues,
    *,
    counted: bool = False,
    tenant: str = DEFAULT_TENANT,
) -> Steps:
    """The rows of ``body`` (a key sent twice keeps its last bar), or
    ``MalformedBodyError`` (400), ``TooManyBarsError`` (413), ``InvalidBodyError``
    (422: every problem of every bar), every row ``tenant``'s, computed in steps: the
    generator yields after each ``CHUNK_BARS`` bars (and each slice of the JSON
    pre-count, unless the caller ``counted`` the body with ``JsonBound`` already), so
    no step holds the CPU for more than about a millisecond; the rows are its return
    value. Only the envelope is decoded in one call (C, a few ms for the largest body).

    Memory: the body, one ``Raw`` view per bar, and the rows; each chunk's typed bars
    are dropped once its rows are built, and no rows are kept once an error is
    found."""
    if codec.json and not counted:
        bound = JsonBound(codec.max_bars)
        for start in range(0, len(body), PRESCAN_STEP):
            bound.feed(body, start, start + PRESCAN_STEP)
            yield
    errors = Errors()
    provider, raws = open_envelope(codec, body, errors)
    if raws is not None and not raws:
        errors.add(None, "bars", "must not be empty")
    yield
    text = trim(provider) if provider is not None else ""
    rows: list[BarRow] = []
    keys: set[tuple[str, str, datetime]] = set()  # fewer than rows: a key came twice
    for start in range(0, len(raws or ()), CHUNK_BARS):
        assert raws is not None
        chunk = raws[start : start + CHUNK_BARS]
        new: list[BarRow] = []
        try:
            typed: list[BarIn] = codec.typed(chunk)
        except (msgspec.ValidationError, *MALFORMED):
            for offset, raw in enumerate(chunk):
                bar = bar_or_errors(codec, raw, start + offset, errors)
                if bar is not None:
                    _check_into(
                        start + offset, bar, text, received_at, new.append, errors, known, tenant
                    )
        else:
            _rows_into(typed, start, text, received_at, new.append, errors, known, tenant)
            del typed
        if errors:
            rows.clear()
            keys.clear()
        else:
            rows += new
            for row in new:
                keys.add((row.symbol, row.resolution, row.ts))
        del new, chunk
        yield
    if errors or raws is None:
        raise InvalidBodyError(errors.kept, errors.total)
    # Rows of one request share received_at, so the sink could not tell which of two
    # copies is newer: the later one in the request wins here.
    return rows if len(keys) == len(rows) else one_per_key(rows, _ROW_KEY)


def _rows_into(
    bars: list[BarIn],
    first: int,
    provider: str,
    received_at: datetime,
    append: Callable[[BarRow], None],
    errors: Errors,
    known: KnownValues,
    tenant: str,
) -> None:
    """The rows of valid ``bars`` appended, the errors of the others added
    (``first``: the index of ``bars[0]`` in the request).

    The numbers of all the bars are checked at once (``_plain_numbers``); then a
    cheap test per bar passes the common, valid one: a known symbol, a timestamp in
    range, a known resolution, and float values that put low and high around open
    and close. Float conversion is monotonic, so a strict float inequality holds
    exactly; a tie holds exactly when the texts are equal. Any other tie, and anything
    unusual, goes through ``check_bar``, which decides with ``Decimal`` (so does every
    bar when the numbers are not all plain)."""
    plain = _plain_numbers(bars)
    if plain is None:
        for index, bar in enumerate(bars, first):
            _check_into(index, bar, provider, received_at, append, errors, known, tenant)
    else:
        good_resolutions, symbols, utc = known.resolutions, known.symbols, UTC
        earliest, latest = EARLIEST, LATEST
        texts, values = iter(plain[0]), iter(plain[1])  # five of each per bar, in order
        fives = zip(texts, texts, texts, texts, texts, strict=True)
        floats = zip(values, values, values, values, values, strict=True)
        for index, (bar, (o, h, lo, c, v), (fo, fh, fl, fc, fv)) in enumerate(
            zip(bars, fives, floats, strict=True), first
        ):
            symbol = symbols.get(bar.symbol)
            ts = bar.ts if bar.ts.tzinfo is utc else utc_in_range(bar.ts)
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
                        tenant,
                    )
                )
            else:
                _check_into(index, bar, provider, received_at, append, errors, known, tenant)


def _check_into(
    index: int,
    bar: BarIn,
    provider: str,
    received_at: datetime,
    append: Callable[[BarRow], None],
    errors: Errors,
    known: KnownValues,
    tenant: str,
) -> None:
    checked = check_bar(bar)
    if isinstance(checked, list):
        for field, message in checked:
            errors.add(index, field, message)
    else:
        known.remember(bar.symbol, checked[0], bar.resolution)
        append(BarRow(provider, *checked, bar.delayed, received_at, tenant))


def utc_in_range(ts: datetime) -> datetime | None:
    """``ts`` in UTC; None when it has no offset or is out of range (``check_bar`` says
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

    One pass over the bars in C: the numbers are joined into one JSON array
    (JSON's number grammar without exponents is the plain decimal grammar, bar
    ``-0``-style details PostgreSQL reads the same), parsed as floats in one call,
    and each is at most 19 characters long, so it cannot have more than 18 digits
    after the point nor reach 10^20. A comma inside a value shows as a wrong count.
    """
    if not bars:
        return None
    try:
        joined = ",".join([f"{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in bars])
    except RecursionError:  # a price nested too deeply to print: ``check_bar`` refuses it
        return None
    texts = joined.split(",")
    values = plain_values(joined, texts)
    if values is None or len(values) != 5 * len(bars):
        return None
    return texts, values


def plain_values(joined: str, texts: list[str]) -> list[float] | None:
    """The numbers ``texts`` (``joined``: the same, comma-separated) as floats, when each
    one is a plain decimal within the columns' domain; None otherwise. One call in C
    (see ``_plain_numbers``); a comma inside a value shows as a wrong count."""
    if any(character in joined for character in _NOT_PLAIN):
        return None
    try:
        values = _FLOATS.decode(f"[{joined}]")
    except msgspec.DecodeError:
        return None
    if len(values) != len(texts) or max(map(len, texts)) > _MAX_PLAIN_LENGTH:
        return None
    return values
