"""Anything the API accepts, the database accepts: generated bars, real table, real sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market_data_store.ingest import (
    EARLIEST,
    JSON,
    LATEST,
    MAX_INTEGER_DIGITS,
    MAX_SCALE,
    MSGPACK,
    BarDecoder,
    InvalidBodyError,
)
from market_data_store.storage import (
    BarRow,
    BarsSink,
    DbPool,
    apply_migrations,
    open_pool,
    prepare_connection,
)

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
PRICES = ("open", "high", "low", "close", "volume")

offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.one_of(
    st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)),
    st.sampled_from([EARLIEST, LATEST - timedelta(microseconds=1)]).map(
        lambda d: d.replace(tzinfo=None)
    ),
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """An instant from EARLIEST to LATEST (excluded), written with any RFC 3339 offset."""
    instant = draw(instants).replace(tzinfo=UTC)
    if instant >= LATEST:
        instant = LATEST - timedelta(microseconds=1)
    return instant.astimezone(draw(offsets)).isoformat()


@st.composite
def decimals(draw: st.DrawFn, signed: bool = True) -> Decimal:
    """At most MAX_SCALE digits after the point, below 10^MAX_INTEGER_DIGITS."""
    scale = draw(st.integers(0, MAX_SCALE))
    limit = 10 ** (MAX_INTEGER_DIGITS + scale) - 1
    edge = st.sampled_from([limit, 0, 1, limit // 10**scale * 10**scale])
    unscaled = draw(st.one_of(st.integers(0, limit), edge))
    sign = -1 if signed and draw(st.booleans()) else 1
    return Decimal(f"{sign * unscaled}E-{scale}")  # exact: scaleb would round to 28 digits


def literal(value: Decimal, style: int) -> bytes:
    """A JSON value for ``value``: a string or a number, plain or with an exponent."""
    if style == 0:
        return b'"%s"' % format(value, "f").encode()
    if style == 1:
        return b'"%s"' % str(value).encode()  # may be 1E+2, 1.5E-7
    if style == 2:
        return format(value, "f").encode()  # a JSON number
    return str(value).lower().encode()  # a JSON number, maybe with an exponent


@st.composite
def bars(draw: st.DrawFn) -> dict[str, Any]:
    prices = sorted(draw(st.lists(decimals(), min_size=4, max_size=4)))
    open_, close = draw(st.permutations([prices[1], prices[2]]))
    return {
        "symbol": draw(st.text(PRINTABLE, min_size=1, max_size=32)),
        "ts": draw(timestamps()),
        "resolution": draw(st.from_regex(r"[1-9][0-9]{0,3}(mo|s|m|h|d|w)", fullmatch=True)),
        "delayed": draw(st.booleans()),
        "values": [open_, prices[3], prices[0], close, draw(decimals(signed=False))],
        "styles": draw(st.lists(st.integers(0, 3), min_size=5, max_size=5)),
    }


def json_body(provider: str, generated: list[dict[str, Any]]) -> bytes:
    parts = []
    for bar in generated:
        head = msgspec.json.encode({k: bar[k] for k in ("symbol", "ts", "resolution", "delayed")})
        fields = [
            b'"%s":%s' % (name.encode(), literal(value, style))
            for name, value, style in zip(PRICES, bar["values"], bar["styles"], strict=True)
        ]
        parts.append(head[:-1] + b"," + b",".join(fields) + b"}")
    envelope = msgspec.json.encode({"provider": provider, "bars": "@"})
    return envelope.replace(b'"@"', b"[" + b",".join(parts) + b"]")


def msgpack_body(provider: str, generated: list[dict[str, Any]]) -> bytes:
    encoded = []
    for bar in generated:
        fields: dict[str, Any] = {k: bar[k] for k in ("symbol", "ts", "resolution", "delayed")}
        for name, value, style in zip(PRICES, bar["values"], bar["styles"], strict=True):
            whole = value.as_tuple().exponent == 0 and abs(value) < 2**63
            fields[name] = int(value) if style >= 2 and whole else str(value)
        encoded.append(fields)
    return msgspec.msgpack.encode({"provider": provider, "bars": encoded})


def accepted_rows() -> list[BarRow]:
    """Rows of generated requests the validator accepts (nearly all: a symbol with a
    space inside, or a provider of spaces, is refused and skipped)."""
    rows: list[BarRow] = []
    refused = 0
    decoder = BarDecoder()

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        provider=st.text(PRINTABLE, min_size=1, max_size=64),
        generated=st.lists(bars(), min_size=1, max_size=8),
        packed=st.booleans(),
    )
    def collect(provider: str, generated: list[dict[str, Any]], packed: bool) -> None:
        nonlocal refused
        body = msgpack_body(provider, generated) if packed else json_body(provider, generated)
        try:
            rows.extend(decoder.rows_of(body, MSGPACK if packed else JSON, 100, datetime.now(UTC)))
        except InvalidBodyError as exc:  # only what the generators do not aim at
            unexpected = [e for e in exc.errors if e.field not in ("symbol", "provider")]
            refused += 1
        else:
            unexpected = []
        assert not unexpected

    collect()
    assert len(rows) > 500
    assert refused < 150
    return rows


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DbPool]:
    p = await open_pool(database_url, min_size=1, max_size=2, init=prepare_connection)
    async with p.acquire() as conn:
        await apply_migrations(conn)
    yield p
    await p.close()


@pytest.mark.parametrize("fast_path", [True, False], ids=["copy", "merge"])
async def test_every_accepted_bar_is_stored(pool: DbPool, fast_path: bool) -> None:
    generated = accepted_rows()
    # one row per key (generated keys repeat), so each COPY of the fast path meets no
    # existing key and is not turned into a merge
    latest = {(r.provider, r.symbol, r.resolution, r.ts): r for r in generated}
    rows = list(latest.values())
    sink = BarsSink(pool, fast_path=fast_path)
    for start in range(0, len(rows), 400):  # a refused row raises: the test fails
        await sink.write(rows[start : start + 400])
    assert sink.stats.rows_received == len(rows)
    if fast_path:
        assert sink.stats.copied_batches == sink.stats.rows_received // 400 + 1
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT * FROM bars")
    assert len(stored) == len(latest)
    for record in stored:
        sent = latest[(record["provider"], record["symbol"], record["resolution"], record["ts"])]
        assert [record[name] for name in PRICES] == [Decimal(getattr(sent, n)) for n in PRICES]
