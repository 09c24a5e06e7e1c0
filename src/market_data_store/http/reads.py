"""What every read route checks of its query (``GET /v1/bars`` and ``GET /v1/<kind>``):
provider, symbols, resolution where there is one, the [start, end) range, the cursor
and the limit, each problem listed (a 400 naming every parameter); the format the
``Accept`` header asks for; and the streamed answer of an export."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter
from litestar.response import Stream

from market_data_store._util.cursor import MAX_CURSOR_CHARS, decode_cursor, encode_cursor
from market_data_store.ingest import (
    EARLIEST,
    LATEST,
    PROVIDER_PATTERN,
    PROVIDER_RULE,
    RESOLUTION,
    RESOLUTION_PATTERN,
    SYMBOL_PATTERN,
    SYMBOL_RULE,
    TS_RANGE_RULE,
    provider_ok,
    symbol_ok,
    trim,
)
from market_data_store.storage import (
    Bucket,
    Format,
    Reader,
    ReadQuery,
    ReadShape,
    resample_problem,
)

from .writes import DEFAULT_LIMIT, MAX_LIMIT

# a query bound may be LATEST itself: ``end`` is exclusive
QUERY_TS_RULE = "must be from 1800-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
QUERY_DAY_RULE = "must be from 1800-01-01 to 2200-01-01"
assert TS_RANGE_RULE.startswith(QUERY_TS_RULE.replace(" to ", " to before "))


def query_errors(
    provider: str,
    symbol: str | None,
    start: datetime | date | None,
    end: datetime | date | None,
    *,
    resolution: str | None = None,
) -> list[dict[str, str]]:
    """Every problem of a read's query (``symbol`` None: not asked for; ``start`` and
    ``end`` instants, or dates for a kind keyed by day; ``resolution`` for bars)."""
    errors: list[dict[str, str]] = []
    if not provider_ok(provider):
        errors.append({"key": "provider", "message": PROVIDER_RULE})
    if symbol is not None and not symbol_ok(symbol, trim(symbol).upper()):
        errors.append({"key": "symbol", "message": SYMBOL_RULE})
    if resolution is not None and not RESOLUTION.fullmatch(resolution):
        errors.append({"key": "resolution", "message": "must be <n><s|m|h|d|w|mo>, e.g. 1m"})
    for key, moment in (("start", start), ("end", end)):
        if isinstance(moment, datetime):
            if moment.utcoffset() is None:
                errors.append({"key": key, "message": "must include a timezone"})
            elif not EARLIEST <= moment <= LATEST:
                errors.append({"key": key, "message": QUERY_TS_RULE})
        elif moment is not None and not EARLIEST.date() <= moment <= LATEST.date():
            errors.append({"key": key, "message": QUERY_DAY_RULE})
    if not errors and start is not None and end is not None and start >= end:
        errors.append({"key": "end", "message": "must be after start"})
    return errors


MAX_SYMBOLS = 1000
"""Most symbols one read may list (``symbols=A,B,...``)."""
MAX_EXPORT_LIMIT = 1 << 62
CSV = "text/csv"
NDJSON = "application/x-ndjson"
_FORMATS: dict[str, Format] = {
    "application/json": "rows",
    "application/*": "rows",
    "*/*": "rows",
    CSV: "csv",
    "text/*": "csv",
    NDJSON: "ndjson",
}
_MEDIA: dict[Format, str] = {"csv": CSV, "ndjson": NDJSON}  # Litestar adds the charset to text/*
GZIP_LEVEL = 1  # a stream's compression: its CPU is the event loop's


def _q(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def wanted_format(accept: str | None) -> Format:
    """The format an ``Accept`` header asks for: a JSON page unless CSV or NDJSON is
    preferred (by q, then by order); what we do not make is ignored."""
    best: tuple[float, Format] = (0.0, "rows")
    for media_range in (accept or "").split(",")[:32]:
        media, *parameters = media_range.split(";")
        fmt = _FORMATS.get(media.strip().lower())
        q = _q(parameters)
        if fmt is not None and q > best[0]:
            best = (q, fmt)
    return best[1]


def accepts_gzip(accept_encoding: str | None) -> bool:
    for coding in (accept_encoding or "").split(",")[:32]:
        name, *parameters = coding.split(";")
        if name.strip().lower() in ("gzip", "x-gzip") and _q(parameters) > 0:
            return True
    return False


def symbols_of(
    symbol: str | None, symbols: str | None, errors: list[dict[str, str]]
) -> tuple[str, ...] | None:
    """The symbols a read names (``symbol``, or ``symbols``: a comma-separated list,
    each trimmed and upper-cased, repeats dropped, in order), None for all of the
    provider's; every problem appended to ``errors``."""
    if symbol is not None and symbols is not None:
        errors.append({"key": "symbols", "message": "give symbol or symbols, not both"})
        return None
    if symbols is None:
        return None if symbol is None else (trim(symbol).upper(),)  # checked by query_errors
    listed = symbols.split(",")
    if len(listed) > MAX_SYMBOLS:
        errors.append({"key": "symbols", "message": f"at most {MAX_SYMBOLS} symbols"})
        return None
    found: dict[str, None] = {}
    for n, sent in enumerate(listed):
        name = trim(sent).upper()
        if not symbol_ok(sent, name):
            errors.append({"key": f"symbols[{n}]", "message": SYMBOL_RULE})
        found[name] = None
    return tuple(found)


def cursor_of(
    cursor: str | None, shape: ReadShape, errors: list[dict[str, str]]
) -> tuple[str, ...] | None:
    if cursor is None:
        return None
    values = decode_cursor(cursor)
    if values is None or len(values) != len(shape.order) or max(map(len, values)) > 256:
        errors.append({"key": "cursor", "message": "not a cursor of this kind's reads"})
        return None
    return values


def check_limit(limit: int | None, fmt: Format, errors: list[dict[str, str]]) -> int | None:
    """The limit of a read: a JSON page's ``DEFAULT_LIMIT`` when none is given, at most
    ``MAX_LIMIT``; an export's none (every row)."""
    if fmt != "rows":
        return limit
    if limit is not None and limit > MAX_LIMIT:
        errors.append({"key": "limit", "message": f"at most {MAX_LIMIT} in a JSON page"})
    return DEFAULT_LIMIT if limit is None else limit


async def _gzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    async for chunk in chunks:
        if packed := packer.compress(chunk):
            yield packed
    yield packer.flush()


async def exported(
    request: Request[Any, Any, Any], reader: Reader, shape: ReadShape, query: ReadQuery, fmt: Format
) -> Stream:
    """The streamed answer of an export (``Accept-Encoding: gzip`` honoured). Starts the
    COPY first: a database that cannot be used, or every export slot taken, is raised
    (503) before anything is answered."""
    export = await reader.export(shape, query, fmt)
    chunks = export.chunks()
    headers = {"Vary": "Accept, Accept-Encoding", "Cache-Control": "no-store"}
    if accepts_gzip(request.headers.get("accept-encoding")):
        chunks = _gzipped(chunks)
        headers["Content-Encoding"] = "gzip"
    return Stream(chunks, media_type=_MEDIA[fmt], headers=headers)


async def answer_read(
    request: Request[Any, Any, Any],
    reader: Reader,
    shape: ReadShape,
    *,
    tenant: str,
    provider: str,
    symbol: str | None,
    symbols: str | None,
    start: datetime | date | None,
    end: datetime | date | None,
    limit: int | None,
    cursor: str | None,
    page: Callable[[list[tuple[Any, ...]], str | None], msgspec.Struct],
    resolution: str | None = None,
    resample_from: str | None = None,
) -> Response[Any] | Stream:
    """A read of ``shape``: its query checked (400 naming every problem), then a JSON
    page (``page(rows, next)``) or an export, as ``Accept`` asks."""
    fmt = wanted_format(request.headers.get("accept"))
    errors = query_errors(provider, symbol, start, end, resolution=resolution)
    listed = symbols_of(symbol, symbols, errors)
    after = cursor_of(cursor, shape, errors)
    if after is not None and listed is not None and shape.by_symbol and after[0] not in listed:
        errors.append({"key": "cursor", "message": "names a symbol this read does not list"})
    most = check_limit(limit, fmt, errors)
    bucket = None
    if resample_from is not None and resolution is not None:
        if not RESOLUTION.fullmatch(resample_from):
            errors.append({"key": "resample_from", "message": "must be <n><s|m|h|d|w|mo>"})
        elif RESOLUTION.fullmatch(resolution):
            if problem := resample_problem(resample_from, resolution):
                errors.append({"key": "resample_from", "message": problem})
            bucket = Bucket(resample_from, resolution)
    if errors:
        raise ValidationException("invalid query parameters", extra=errors)
    query = ReadQuery(
        tenant=tenant,
        provider=trim(provider),
        symbols=listed,
        fixed=() if resolution is None else (resolution,),
        start=start,
        end=end,
        after=after,
        limit=most,
        bucket=bucket,
    )
    if fmt != "rows":
        return await exported(request, reader, shape, query, fmt)
    # the database unavailable (503) or refusing a value (400): raised, mapped in problems.py
    found = await reader.page(shape, query)
    following = None if found.after is None else encode_cursor(found.after)
    return Response(page(found.rows, following), headers={"Vary": "Accept"})


async def latest_rows(
    reader: Reader,
    shape: ReadShape,
    tenant: str,
    provider: str,
    symbols: str,
    *,
    resolution: str | None = None,
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The newest row of each of ``symbols`` (checked: 400 naming every problem) and
    the symbols that have none."""
    errors = query_errors(provider, None, None, None, resolution=resolution)
    listed = symbols_of(None, symbols, errors) or ()
    if errors:
        raise ValidationException("invalid query parameters", extra=errors)
    query = ReadQuery(
        tenant=tenant,
        provider=trim(provider),
        symbols=listed,
        fixed=() if resolution is None else (resolution,),
    )
    rows = await reader.latest(shape, query)
    found = {row[1] for row in rows}  # the provider, then the symbol
    return rows, [symbol for symbol in listed if symbol not in found]


# The query parameters of reads, as the OpenAPI document states them
Provider = Annotated[str, QueryParameter(schema_extra={"pattern": PROVIDER_PATTERN})]
Resolution = Annotated[str, QueryParameter(schema_extra={"pattern": RESOLUTION_PATTERN})]
Symbol = Annotated[str, QueryParameter(schema_extra={"pattern": SYMBOL_PATTERN})]
OptionalSymbol = Annotated[
    str | None,
    QueryParameter(
        schema_extra={"pattern": SYMBOL_PATTERN},
        description="One symbol (or `symbols`; neither: all of the provider's)",
    ),
]
Symbols = Annotated[
    str | None,
    QueryParameter(
        description=f"Symbols, comma-separated (at most {MAX_SYMBOLS}), read in this order",
        min_length=1,
    ),
]
RequiredSymbols = Annotated[
    str,
    QueryParameter(description=f"Symbols, comma-separated (at most {MAX_SYMBOLS})", min_length=1),
]
Limit = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=MAX_EXPORT_LIMIT,
        description=f"Most rows: a JSON page {DEFAULT_LIMIT} by default, at most "
        f"{MAX_LIMIT}; an export every row unless given",
    ),
]
Cursor = Annotated[
    str | None,
    QueryParameter(
        description="Where to start: a page's `next` (or, to resume an export, the cursor "
        "of the last row received)",
        min_length=1,
        max_length=MAX_CURSOR_CHARS,
    ),
]
ResampleFrom = Annotated[
    str | None,
    QueryParameter(
        schema_extra={"pattern": RESOLUTION_PATTERN},
        description="Compute the `resolution` bars from the stored bars of this finer one",
    ),
]
