"""POST /v1/bars bodies in CSV (``text/csv``): a restore of what ``GET /v1/bars``
exports, through the same rules as JSON bars.

The body is UTF-8 (a leading byte-order mark is dropped). Its first non-blank line is
a header naming the columns, in any order: ``provider``, ``symbol``, ``resolution``,
``ts``, ``open``, ``high``, ``low``, ``close`` and ``volume`` are required, ``delayed``
(``true``/``false``; default false) and ``updated_at`` (an RFC 3339 instant; default
the acceptance time) optional. ``updated_at`` becomes the row's ``received_at``: the
sink's upsert keeps the later of two versions, so a restore never rolls a later
correction back, and restoring twice changes nothing. Values are CSV as PostgreSQL's
COPY writes it (RFC 4180: double quotes where needed, ``\\n`` or ``\\r\\n`` line ends);
one line is one row (no valid value holds a line break); blank lines are skipped,
and the first data row is index 0 in the errors.

A chunk of lines is decoded in C: ``csv.reader``, then ``msgspec.convert`` into a
struct of the header's order (timestamps parsed exactly as JSON bars' are), the
numbers checked at once (``rows.plain_values``); then each row passes the fast
path's cheap test (known symbols and resolutions, float comparisons), or is examined
field by field (``check_bar``) for its every problem, as is every row of a chunk that
does not type.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import msgspec

from market_data_store.storage import BARS, DEFAULT_TENANT, BarRow

from .bounds import MAX_BAR_BYTES, PRESCAN_STEP, CsvBound, check_bar_count
from .codec import MEDIA_TYPES, BarIn
from .errors import Errors, InvalidBodyError, MalformedBodyError
from .origins import one_per_key
from .rows import KnownValues, plain_values, utc_in_range
from .rules import EARLIEST, LATEST, PROVIDER_RULE, TS_RANGE_RULE, check_bar, provider_ok, trim

CSV = "text/csv"
BAR_MEDIA_TYPES = {**MEDIA_TYPES, CSV: CSV}
"""What ``POST /v1/bars`` takes (the other kinds: ``MEDIA_TYPES``)."""
CSV_COLUMNS = BARS.names
"""The columns of a bars CSV, in the export's order."""
REQUIRED_COLUMNS = CSV_COLUMNS[:9]
# Rows converted, checked and built per step (about a millisecond, as JSON's 128 bars).
CSV_CHUNK_ROWS = 512
MAX_CACHED_HEADERS = 64
DELAYED_RULE = "must be true or false"
FUTURE_RULE = (
    "must not be later than now (when the store accepts the row): such a version would "
    "keep every later correction out"
)
NO_TIMEZONE = "must include a timezone (e.g. 2024-01-02T14:30:00Z)"

_DELAYED = {"true": True, "false": False}
_INSTANTS = ("ts", "updated_at")
_NUMBERS = ("open", "high", "low", "close", "volume")
_ORDER = {name: n for n, name in enumerate(("$", *CSV_COLUMNS))}
_PLACEHOLDER_TS = datetime(2000, 1, 1, tzinfo=UTC)
_TOO_BIG = f"a bar may take at most {MAX_BAR_BYTES} bytes as a line; not decoded"
_BLANK = ("", "\r")

Steps = Generator[None, None, list[BarRow]]


class Header:
    """The columns of a body's header row (valid), and how its rows are read: the
    struct they convert into (the header's columns in its order, then the optional
    ones it lacks, with their defaults) and where the numbers are."""

    __slots__ = ("json_rows", "names", "numbers", "row_list", "width")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.width = len(names)
        fields: list[Any] = [(name, datetime if name in _INSTANTS else str) for name in names]
        if "delayed" not in names:
            fields.append(("delayed", str, "false"))
        if "updated_at" not in names:
            fields.append(("updated_at", datetime | None, None))
        row = msgspec.defstruct(
            "CsvBar", fields, array_like=True, forbid_unknown_fields=True, gc=False
        )
        self.row_list: Any = list[row]  # type: ignore[valid-type]
        self.json_rows = msgspec.json.Decoder(self.row_list)
        self.numbers = itemgetter(*(names.index(name) for name in _NUMBERS))


@functools.lru_cache(maxsize=MAX_CACHED_HEADERS)
def header_of(names: tuple[str, ...]) -> Header:
    """The ``Header`` of valid column names (one struct per order, kept)."""
    return Header(names)


def read_header(line: str, errors: Errors) -> Header | None:
    """The header row's columns, or None with every problem added (index None, the
    column as ``field``): an unknown column, one given twice, a required one missing."""
    if len(line) > MAX_BAR_BYTES:
        errors.add(None, "$", f"the header row may take at most {MAX_BAR_BYTES} bytes")
        return None
    try:
        names = next(csv.reader([line], strict=True))
    except csv.Error as exc:
        errors.add(None, "$", f"the header row is not valid CSV: {exc}")
        return None
    seen: set[str] = set()
    for name in names:
        if name not in CSV_COLUMNS:
            errors.add(None, name, f"unknown column; accepted: {', '.join(CSV_COLUMNS)}")
        elif name in seen:
            errors.add(None, name, "column named twice in the header row")
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            errors.add(None, name, "required column missing from the header row")
    return None if errors else header_of(tuple(names))


def csv_rows_in_steps(
    body: bytes | bytearray,
    max_bars: int,
    received_at: datetime,
    known: KnownValues,
    *,
    counted: bool = False,
    tenant: str = DEFAULT_TENANT,
) -> Steps:
    """The rows of a CSV body, every one ``tenant``'s, or ``MalformedBodyError`` (400:
    not UTF-8), ``TooManyBarsError`` (413) or ``InvalidBodyError`` (422: every problem
    of the header or of every row), computed in steps of ``CSV_CHUNK_ROWS`` rows (and
    slices of the pre-count, unless the caller ``counted`` the body with ``CsvBound``).
    ``received_at``: the acceptance time (of rows without ``updated_at``, and the
    latest ``updated_at`` may be). A key given twice keeps its row of the latest
    ``updated_at`` (of two alike, the later row).

    Memory: the body, its text and its lines, and the rows; each chunk's parsed fields
    are dropped once its rows are built, and no rows are kept once an error is found."""
    if not counted:
        bound = CsvBound(max_bars)
        for start in range(0, len(body), PRESCAN_STEP):
            bound.feed(body, start, start + PRESCAN_STEP)
            yield
    try:
        text = body.decode("utf-8-sig")  # a byte-order mark first is dropped
    except UnicodeDecodeError as exc:
        raise MalformedBodyError(f"body is not valid UTF-8: {exc}") from None
    lines = text.split("\n")
    del text
    yield
    errors = Errors()
    at = next((n for n, line in enumerate(lines) if line not in _BLANK), len(lines))
    if at == len(lines):
        errors.add(None, "$", f"a header row is required: {','.join(CSV_COLUMNS)}")
        raise InvalidBodyError(errors.kept, errors.total)
    header = read_header(lines[at], errors)
    if header is None:
        raise InvalidBodyError(errors.kept, errors.total)
    rows: list[BarRow] = []
    keys: set[Any] = set()  # fewer than rows: a key came twice
    providers: dict[str, str] = {}  # as sent -> as stored, of valid rows
    count = 0
    for start in range(at + 1, len(lines), CSV_CHUNK_ROWS):
        chunk = [line for line in lines[start : start + CSV_CHUNK_ROWS] if line not in _BLANK]
        if not chunk:
            continue
        first = count
        count += len(chunk)
        check_bar_count(count, max_bars)
        new: list[BarRow] = []
        typed = _typed(chunk, header)
        context = _Context(received_at, new.append, errors, known, providers, tenant)
        if typed is None:
            for index, line in enumerate(chunk, first):
                _line_into(index, line, header, context)
        else:
            _rows_into(*typed, first, context)
        del typed, chunk
        if errors:
            rows.clear()
            keys.clear()
        else:
            rows += new
            keys.update(map(_KEY, new))
        del new
        yield
    if not count and not errors:
        errors.add(None, "$", "no bars after the header row: must not be empty")
    if errors:
        raise InvalidBodyError(errors.kept, errors.total)
    return rows if len(keys) == len(rows) else _latest_versions(rows)


_KEY = attrgetter("provider", "symbol", "resolution", "ts")


class _Context:
    """What checking the rows of one body needs besides the rows."""

    __slots__ = ("append", "errors", "known", "providers", "received_at", "tenant")

    def __init__(
        self,
        received_at: datetime,
        append: Callable[[BarRow], None],
        errors: Errors,
        known: KnownValues,
        providers: dict[str, str],
        tenant: str,
    ) -> None:
        self.received_at = received_at
        self.append = append
        self.errors = errors
        self.known = known
        self.providers = providers  # as sent -> as stored, of valid rows so far
        self.tenant = tenant


def _latest_versions(rows: list[BarRow]) -> list[BarRow]:
    """One row per key: the latest ``updated_at`` (``received_at``), of two alike the later."""
    return one_per_key(rows, _KEY, _newer)


def _newer(row: BarRow, kept: BarRow) -> bool:
    return row.received_at >= kept.received_at


_NUMBER_TEXTS = attrgetter(*_NUMBERS)


def _typed(chunk: list[str], header: Header) -> tuple[list[Any], list[Any]] | None:
    """The chunk's rows typed in C, with the text of each one's five numbers, or None
    when any line is too long, does not parse on its own, has another number of fields
    than the header, or does not type: then each line is examined on its own.

    Lines without quotes or backslashes (an export's, bar the rare symbol or provider
    with a comma or quote) are CSV whose fields JSON strings hold as they are: the
    chunk is rewritten as one JSON array of arrays and decoded straight into the
    header's struct (control characters, a carriage return too, fail the decoding:
    then, and for the other lines, ``csv.reader`` parses and ``msgspec.convert``
    types them; both parse timestamps as JSON bars' are)."""
    if max(map(len, chunk)) > MAX_BAR_BYTES:
        return None
    text = "\n".join(chunk)
    # every line exactly the header's fields (an array struct would take more: a row
    # of ten values under a header of nine must not fill a column it does not name)
    if '"' not in text and "\\" not in text and text.count(",") == (header.width - 1) * len(chunk):
        document = '[["' + text.replace(",", '","').replace("\n", '"],["') + '"]]'
        try:
            rows: list[Any] = header.json_rows.decode(document)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            return rows, list(map(_NUMBER_TEXTS, rows))
    try:
        fields = list(csv.reader(chunk, strict=True))
    except csv.Error:
        return None
    # a quoted value running into the next line joins two lines into one row
    if len(fields) != len(chunk) or not min(map(len, fields)) == max(map(len, fields)) == (
        header.width
    ):
        return None
    try:
        typed: list[Any] = msgspec.convert(fields, header.row_list)
    except msgspec.ValidationError:
        return None
    return typed, list(map(header.numbers, fields))


def _rows_into(bars: list[Any], numbers: list[Any], first: int, context: _Context) -> None:
    """The rows of typed CSV rows (``numbers``: the text of each one's five numbers)
    appended, the errors of the others added (``first``: the index of the first).
    The numbers of all of them are checked at once
    (``plain_values``); then a cheap test per row passes the common, valid one, as
    ``rows._rows_into`` does for JSON bars, plus a known provider, ``delayed`` spelt
    ``true`` or ``false`` and ``updated_at`` in range and not after ``received_at``.
    Any other row goes through ``_check_row``, which decides exactly."""
    texts = list(chain.from_iterable(numbers))
    values = plain_values(",".join(texts), texts)
    if values is None:
        for index, bar in enumerate(bars, first):
            _fields_into(index, msgspec.structs.asdict(bar), context)
        return
    known, providers, append = context.known, context.providers, context.append
    received_at, tenant = context.received_at, context.tenant
    resolutions, symbols, utc, delayed_of = known.resolutions, known.symbols, UTC, _DELAYED
    earliest, latest = EARLIEST, LATEST
    last_updated: datetime | None = None
    last_received: datetime | None = None
    text_of, value_of = iter(texts), iter(values)  # five of each per row, in order
    fives = zip(text_of, text_of, text_of, text_of, text_of, strict=True)
    floats = zip(value_of, value_of, value_of, value_of, value_of, strict=True)
    for index, (bar, (o, h, lo, c, v), (fo, fh, fl, fc, fv)) in enumerate(
        zip(bars, fives, floats, strict=True), first
    ):
        provider = providers.get(bar.provider)
        symbol = symbols.get(bar.symbol)
        ts = bar.ts if bar.ts.tzinfo is utc else utc_in_range(bar.ts)
        updated = bar.updated_at
        received: datetime | None
        if updated is None:
            received = received_at
        elif updated == last_updated:  # one object for a run of equal instants: the
            received = last_received  # sink formats it once for the run
        else:
            received = updated if updated.tzinfo is utc else utc_in_range(updated)
            last_updated, last_received = updated, received
        delayed = delayed_of.get(bar.delayed)
        if (
            provider is not None
            and symbol is not None
            and ts is not None
            and earliest <= ts < latest
            and received is not None
            and earliest <= received <= received_at
            and delayed is not None
            and bar.resolution in resolutions
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
                    delayed,
                    received,
                    tenant,
                )
            )
        else:  # its values by column, ``ts`` and ``updated_at`` typed
            _fields_into(index, msgspec.structs.asdict(bar), context)


def _line_into(index: int, line: str, header: Header, context: _Context) -> None:
    """One line read on its own: its row appended, or its every problem added."""
    errors = context.errors
    if len(line) > MAX_BAR_BYTES:
        errors.add(index, "$", _TOO_BIG)
        return
    try:
        fields = next(csv.reader([line], strict=True))
    except csv.Error as exc:
        errors.add(index, "$", f"not valid CSV (a value may not span lines): {exc}")
        return
    if len(fields) != header.width:
        errors.add(index, "$", f"{len(fields)} fields; the header row names {header.width}")
        return
    named: dict[str, Any] = dict(zip(header.names, fields, strict=True))
    _fields_into(index, named, context)


def _fields_into(index: int, named: dict[str, Any], context: _Context) -> None:
    checked = check_row(named, context.received_at, context.tenant)
    if isinstance(checked, list):
        for field, message in checked:
            context.errors.add(index, field, message)
        return
    context.append(checked)
    context.known.remember(named["symbol"], checked.symbol, checked.resolution)
    context.providers[named["provider"]] = checked.provider


def check_row(
    named: dict[str, Any], received_at: datetime, tenant: str = DEFAULT_TENANT
) -> BarRow | list[tuple[str, str]]:
    """One row, examined exactly (its values by column: text, or ``ts`` and
    ``updated_at`` already typed): its ``BarRow``, ``tenant``'s, when valid, else
    every (column, problem) in column order. The bar's own rules are
    ``check_bar``'s, as for JSON bars."""
    problems: list[tuple[str, str]] = []
    sent_provider = named["provider"]
    if not provider_ok(sent_provider):
        problems.append(("provider", PROVIDER_RULE))
    ts = _instant(named["ts"], problems, "ts")
    bar = BarIn(
        named["symbol"],
        _PLACEHOLDER_TS if ts is None else ts,
        named["open"],
        named["high"],
        named["low"],
        named["close"],
        named["volume"],
        resolution=named["resolution"],
    )
    checked = check_bar(bar)
    if isinstance(checked, list):  # the ts is a placeholder's when it did not type
        problems += [(f, m) for f, m in checked if f != "ts" or ts is not None]
    delayed = _DELAYED.get(named.get("delayed", "false"))
    if delayed is None:
        problems.append(("delayed", DELAYED_RULE))
    received: datetime | None = received_at
    if "updated_at" in named and named["updated_at"] is not None:
        received = _instant(named["updated_at"], problems, "updated_at")
        if received is not None:
            received = _updated_at(received, received_at, problems)
    if problems or isinstance(checked, list) or delayed is None or received is None:
        return sorted(problems, key=lambda problem: _ORDER[problem[0]])
    symbol, resolution, ts_utc, o, h, lo, c, v = checked
    provider = trim(sent_provider)
    return BarRow(provider, symbol, resolution, ts_utc, o, h, lo, c, v, delayed, received, tenant)


_DATETIME = functools.partial(msgspec.convert, type=datetime)


def _instant(value: Any, problems: list[tuple[str, str]], name: str) -> datetime | None:
    """A ``ts`` or ``updated_at`` typed (as JSON bars' are), or None with its problem."""
    if isinstance(value, datetime):
        return value
    try:
        typed: datetime = _DATETIME(value)
    except msgspec.ValidationError as exc:
        message = str(exc)
        problems.append((name, message[:1].lower() + message[1:]))
        return None
    return typed


def _updated_at(
    updated: datetime, received_at: datetime, problems: list[tuple[str, str]]
) -> datetime | None:
    """``updated_at`` in UTC, or None with its problem: an offset, the ts range, not
    after ``received_at``."""
    if updated.tzinfo is None or updated.utcoffset() is None:
        problems.append(("updated_at", NO_TIMEZONE))
        return None
    if not EARLIEST <= updated < LATEST:
        problems.append(("updated_at", TS_RANGE_RULE))
        return None
    if updated > received_at:
        problems.append(("updated_at", FUTURE_RULE))
        return None
    return updated.astimezone(UTC)
