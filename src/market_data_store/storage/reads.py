"""The SQL of every read: pages, exports, latest rows and resampled bars, of every kind.

A kind is read as a ``ReadShape``: its columns, and its *order* - the primary key's
columns after the provider (bars: symbol, resolution, ts), which every read follows, so
that a read is a range scan of the key and a page ends at a key the next one starts
after (``after``: a keyset cursor, stable under concurrent inserts). A read of a list
of symbols is one statement per symbol, in the list's order (each a range scan; one
statement with ``symbol = ANY(...)`` would sort every matching row first); a read of
all of a provider's symbols is one statement in the key's order.

Rows come out in one of three formats: ``rows`` (values for a JSON page: decimals as
PostgreSQL's exact text), ``csv`` and ``ndjson`` (text PostgreSQL formats itself, for
``COPY ... TO STDOUT``: instants in RFC 3339 UTC, ``updated_at`` last, so an export
restores without overwriting a later correction)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from .facts import FACT_TABLES, FactTable

Format = Literal["rows", "csv", "ndjson"]


@dataclass(frozen=True)
class ReadShape:
    """How a kind is read: its ``columns`` after the provider (name, SQL type) in the
    order they are answered, its ``order`` (the primary key after the provider, the
    tenant left out), the ``time`` column ranges are over, the ``symbol`` column (text:
    one symbol per row; text[]: news, any of several), and ``fixed``: columns a read
    names one value of (bars' resolution)."""

    kind: str
    columns: tuple[tuple[str, str], ...]
    order: tuple[str, ...]
    time: str
    symbol: str
    fixed: tuple[str, ...] = ()
    types: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", dict(self.columns))
        assert set(self.order) | {self.time, self.symbol} | set(self.fixed) <= set(self.types)

    @property
    def by_symbol(self) -> bool:
        """One symbol per row (the order starts with it)."""
        return self.types[self.symbol] == "text"

    @property
    def names(self) -> tuple[str, ...]:
        """The columns of a CSV export, in order (its header)."""
        return ("provider", *(name for name, _ in self.columns), "updated_at")


def _numbers(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, "numeric") for name in names)


BARS = ReadShape(
    "bars",
    (
        ("symbol", "text"),
        ("resolution", "text"),
        ("ts", "timestamptz"),
        *_numbers("open", "high", "low", "close", "volume"),
        ("delayed", "boolean"),
    ),
    order=("symbol", "resolution", "ts"),
    time="ts",
    symbol="symbol",
    fixed=("resolution",),
)


def _fact_shape(table: FactTable) -> ReadShape:
    return ReadShape(table.kind, table.columns, table.order, table.time, table.symbol)


SHAPES: dict[str, ReadShape] = {
    "bars": BARS,
    **{kind: _fact_shape(table) for kind, table in FACT_TABLES.items()},
}

_RESOLUTION = re.compile(r"([1-9][0-9]{0,3})(mo|s|m|h|d|w)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # ISO weeks start on Mondays
_BEFORE_ALL = datetime(1799, 1, 1, tzinfo=UTC)  # stored instants are from 1800 (0003)


@dataclass(frozen=True)
class Bucket:
    """Resampling bars of resolution ``source`` into bars of ``target``: UTC buckets
    aligned to the epoch (s, m, h, d), ISO weeks from Monday (w), calendar months
    (mo). Both must match ``^[1-9][0-9]{0,3}(mo|s|m|h|d|w)$`` (the HTTP layer checks,
    and that the source fits the target: ``resample_problem``)."""

    source: str
    target: str

    def sql(self, column: str) -> str:
        """The start of the bucket holding instant ``column``."""
        count, unit = _parse(self.target)
        if unit == "mo":  # months since 1970-01, floored to a multiple of count
            local = f"({column} AT TIME ZONE 'UTC')"
            year, month = f"extract(year FROM {local})::int", f"extract(month FROM {local})::int"
            months = f"(({year} - 1970) * 12 + {month} - 1)"
            back = f"((({months}) % {count}) + {count}) % {count}"
            return (
                f"((date_trunc('month', {local}) - make_interval(months => {back})) "
                "AT TIME ZONE 'UTC')"
            )
        seconds = count * _SECONDS[unit]
        # the grid of the epoch (of its first Monday for weeks), from a point of it
        # before every stored instant: date_bin floors only instants after its origin
        grid = _MONDAY if unit == "w" else _EPOCH
        origin = grid - timedelta(
            seconds=seconds * -(-(grid - _BEFORE_ALL).total_seconds() // seconds)
        )
        return (
            f"date_bin('{seconds} seconds'::interval, {column}, timestamptz '{origin.isoformat()}')"
        )


def _parse(resolution: str) -> tuple[int, str]:
    match = _RESOLUTION.fullmatch(resolution)
    if match is None:
        raise ValueError(f"not a resolution: {resolution!r}")
    return int(match[1]), match[2]


def resample_problem(source: str, target: str) -> str | None:
    """Why bars of ``source`` cannot be resampled exactly into ``target`` (each source
    bar must lie in one target bucket), or None when they can."""
    (sn, su), (tn, tu) = _parse(source), _parse(target)
    if tu == "mo":
        if su == "mo":
            ok = tn % sn == 0 and tn > sn
        else:  # months start at midnight UTC: a source bar must not straddle one
            ok = su != "w" and 86400 % (sn * _SECONDS[su]) == 0
    elif su == "mo":
        ok = False
    else:
        step, span = sn * _SECONDS[su], tn * _SECONDS[tu]
        # the two grids' origins (the epoch; its first Monday for weeks) a whole number
        # of source bars apart
        offset = (4 * 86400 if tu == "w" else 0) - (4 * 86400 if su == "w" else 0)
        ok = span > step and span % step == 0 and offset % step == 0
    if ok:
        return None
    return f"{target} bars cannot be made exactly of {source} bars (coarser, a multiple)"


@dataclass(frozen=True)
class ReadQuery:
    """One read: ``tenant``'s rows of ``provider``; ``symbols`` a list (in this order;
    None: all of the provider's), ``fixed`` the values of the shape's fixed columns,
    ``time`` in ``[start, end)``, after the row whose order values are ``after``, at
    most ``limit`` (None: all), resampled when ``bucket`` is given (bars)."""

    tenant: str
    provider: str
    symbols: tuple[str, ...] | None = None
    fixed: tuple[str, ...] = ()
    start: datetime | date | None = None
    end: datetime | date | None = None
    after: tuple[str, ...] | None = None
    limit: int | None = None
    bucket: Bucket | None = None


@dataclass(frozen=True)
class Statement:
    """SQL whose last parameter is the row limit (set when it runs: what is left)."""

    sql: str
    args: tuple[object, ...]


def _ident(name: str) -> str:
    return f'"{name}"'


def _rfc3339(column: str) -> str:
    utc = f"{column} AT TIME ZONE 'UTC'"
    return (
        f"CASE WHEN date_trunc('second', {column}) = {column} "
        f'THEN to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS"Z"\') '
        f'ELSE to_char({utc}, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') END'
    )


def _shown(name: str, sql: str, fmt: Format) -> str:
    column = _ident(name)
    if fmt == "rows":
        return f"{column}::text" if sql == "numeric" else column
    if sql == "timestamptz":
        return _rfc3339(column)
    if sql == "date":
        return f"to_char({column}, 'YYYY-MM-DD')"
    if sql in ("boolean", "numeric") and fmt == "csv":
        return f"{column}::text" if sql == "boolean" else column
    if sql == "numeric":  # a string in JSON: exact
        return f"{column}::text"
    return column


def select_list(shape: ReadShape, fmt: Format) -> str:
    """What a read of ``shape`` selects in ``fmt``."""
    columns = (("provider", "text"), *shape.columns)
    if fmt == "rows":
        return ", ".join(_shown(name, sql, fmt) for name, sql in columns)
    columns = (*columns, ("updated_at", "timestamptz"))
    if fmt == "csv":
        return ", ".join(f"{_shown(n, sql, fmt)} AS {_ident(n)}" for n, sql in columns)
    pairs = ", ".join(f"'{n}', {_shown(n, sql, fmt)}" for n, sql in columns)
    return f"json_build_object({pairs})::text"


class _Params:
    def __init__(self) -> None:
        self.values: list[object] = []

    def __call__(self, value: object, cast: str | None = None) -> str:
        self.values.append(value)
        return f"${len(self.values)}" + (f"::{cast}" if cast else "")


def _after(
    shape: ReadShape, columns: tuple[str, ...], values: tuple[str, ...], p: _Params, op: str
) -> str:
    # sent as text, read as the column's type by the database (a bad value: a 400)
    if len(columns) == 1:
        return f"{_ident(columns[0])} {op} {p(values[0], 'text::' + shape.types[columns[0]])}"
    left = ", ".join(map(_ident, columns))
    right = ", ".join(p(v, "text::" + shape.types[c]) for c, v in zip(columns, values, strict=True))
    return f"({left}) {op} ({right})"


def statements(shape: ReadShape, query: ReadQuery, fmt: Format) -> list[Statement]:
    """The statements of ``query``, run in order (each limited to what is left).
    ``query.after`` must hold as many values as ``shape.order`` (the HTTP layer checks);
    values the database cannot read as their column's type raise there (a 400)."""
    after = query.after
    if shape.by_symbol and query.symbols is not None:
        listed = query.symbols
        out: list[Statement] = []
        if after is not None:  # from the cursor's symbol on (not listed: nothing is left)
            at = listed.index(after[0]) if after[0] in listed else len(listed)
            if at < len(listed):
                out.append(_statement(shape, query, fmt, listed[at], after[1:]))
            listed = listed[at + 1 :]
        out.extend(_statement(shape, query, fmt, symbol, None) for symbol in listed)
        return out
    return [_statement(shape, query, fmt, None, after)]


def _statement(
    shape: ReadShape,
    query: ReadQuery,
    fmt: Format,
    symbol: str | None,
    after: tuple[str, ...] | None,
) -> Statement:
    p = _Params()
    where = [f"tenant_id = {p(query.tenant)}", f"provider = {p(query.provider)}"]
    order = shape.order[1:] if symbol is not None else shape.order
    if symbol is not None:
        where.append(f"{_ident(shape.symbol)} = {p(symbol)}")
    elif query.symbols is not None:  # news: articles naming any of them
        where.append(f"{_ident(shape.symbol)} && {p(list(query.symbols), 'text[]')}")
    time = _ident(shape.time)
    time_type = shape.types[shape.time]
    if query.start is not None:
        where.append(f"{time} >= {p(query.start, time_type)}")
    if query.end is not None:
        where.append(f"{time} < {p(query.end, time_type)}")
    if query.bucket is None:
        for name, value in zip(shape.fixed, query.fixed, strict=True):
            where.append(f"{_ident(name)} = {p(value)}")
        if after is not None:
            where.append(_after(shape, order, after, p, ">"))
        source = f"{shape.kind} AS t"
    else:  # bars only: the source bars from the start of the cursor's bucket on
        assert shape is BARS
        where.append(f"resolution = {p(query.bucket.source)}")
        outer: list[str] = []
        if after is not None:
            inner = tuple(c for c in order if c != "resolution")
            inner_after = tuple(v for c, v in zip(order, after, strict=True) if c != "resolution")
            where.append(_after(shape, inner, inner_after, p, ">="))
            outer.append(_after(shape, order, after, p, ">"))
        source = f"({_resampled(query.bucket, ' AND '.join(where), p)}) AS t"
        where = outer
    # the table's columns, not the select list's formatted text of the same name
    ordering = ", ".join(f"t.{_ident(c)}" for c in order)
    conditions = f"WHERE {' AND '.join(where)}" if where else ""
    limit = p(query.limit, "bigint")
    sql = (
        f"SELECT {select_list(shape, fmt)} FROM {source} {conditions}"
        f" ORDER BY {ordering} LIMIT {limit}"
    )
    return Statement(sql, tuple(p.values))


def _resampled(bucket: Bucket, where: str, p: _Params) -> str:
    target = p(bucket.target, "text")
    return f"""
SELECT provider, symbol, {target} AS resolution, bucket AS ts,
       (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume,
       bool_or(delayed) AS delayed, max(updated_at) AS updated_at
FROM (SELECT provider, symbol, ts, open, high, low, close, volume, delayed, updated_at,
             {bucket.sql("ts")} AS bucket
      FROM bars WHERE {where}) AS source
GROUP BY provider, symbol, bucket"""


def latest_statement(shape: ReadShape, query: ReadQuery) -> Statement:
    """The newest row of each of ``query.symbols`` (in their order; a symbol with none
    is left out): one probe of the key's index each."""
    assert shape.by_symbol
    assert query.symbols is not None
    p = _Params()
    conditions = [
        f"tenant_id = {p(query.tenant)}",
        f"provider = {p(query.provider)}",
        f"{_ident(shape.symbol)} = wanted.wanted_symbol",
        *(f"{_ident(n)} = {p(v)}" for n, v in zip(shape.fixed, query.fixed, strict=True)),
    ]
    symbols = p(list(query.symbols), "text[]")
    newest = ", ".join(f"{_ident(c)} DESC" for c in shape.order[1:])
    sql = f"""
SELECT {select_list(shape, "rows")}
FROM unnest({symbols}) WITH ORDINALITY AS wanted(wanted_symbol, n)
CROSS JOIN LATERAL (
    SELECT * FROM {shape.kind} WHERE {" AND ".join(conditions)}
    ORDER BY {newest} LIMIT 1
) AS newest
ORDER BY wanted.n LIMIT {p(None, "bigint")}"""
    return Statement(sql, tuple(p.values))


def order_values(shape: ReadShape, row: dict[str, object]) -> tuple[str, ...]:
    """A row's order values as text (what a cursor after it holds)."""
    values: list[str] = []
    for name in shape.order:
        value = row[name]
        values.append(value.isoformat() if isinstance(value, date) else str(value))
    return tuple(values)
