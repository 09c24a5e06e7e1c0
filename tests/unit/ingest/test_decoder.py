"""``BarDecoder``: a body read as it arrives, decoded inline or in steps, one large body
at a time; all of its state its own, so two apps in one process share none of it."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo

import msgspec
import pytest

from market_data_store.ingest import (
    INLINE_DECODE_BYTES,
    JSON,
    MSGPACK,
    AcceptClock,
    BarDecoder,
    TooManyBarsError,
)
from market_data_store.ingest import decoder as decoder_module
from market_data_store.storage import BarRow
from tests.support.bars import NOW, bars_body


async def pieces(
    data: bytes, sizes: list[int], read: list[int] | None = None
) -> AsyncIterator[bytes]:
    """``data`` in pieces of ``sizes`` bytes (the last size repeated), as a request
    streams it; ``read`` gets the length of each piece taken."""
    at = 0
    for size in itertools.chain(sizes, itertools.repeat(sizes[-1])):
        if at >= len(data):
            return
        if read is not None:
            read.append(len(data[at : at + size]))
        yield data[at : at + size]
        at += size
        await asyncio.sleep(0)


def encoded(n: int, media_type: str, symbol: str = "S") -> bytes:
    encode = msgspec.json.encode if media_type == JSON else msgspec.msgpack.encode
    return encode(bars_body(n, symbol=symbol))


def without_received_at(rows: list[BarRow]) -> list[BarRow]:
    return [msgspec.structs.replace(row, received_at=NOW) for row in rows]


@pytest.mark.parametrize("media_type", [JSON, MSGPACK])
@pytest.mark.parametrize("n", [3, 2000])
async def test_a_streamed_body_gives_the_rows_of_the_body_in_memory(
    media_type: str, n: int
) -> None:
    """Inline (small) or in steps (over ``INLINE_DECODE_BYTES``): the same rows as
    ``rows_of``, accepted now."""
    data = encoded(n, media_type)
    assert (len(data) > INLINE_DECODE_BYTES) == (n > 3)
    decoder = BarDecoder()
    before = datetime.now(UTC)
    rows = await decoder.rows(pieces(data, [1000, 7, 65536]), media_type, 5000)
    assert without_received_at(rows) == decoder.rows_of(data, media_type, 5000, NOW)
    assert {row.received_at for row in rows} <= {rows[0].received_at}
    assert before <= rows[0].received_at <= datetime.now(UTC)


async def test_a_json_body_over_the_cap_is_refused_as_it_arrives_and_read_to_its_end() -> None:
    data = encoded(50, JSON)
    read: list[int] = []
    with pytest.raises(TooManyBarsError, match="objects in the body"):
        await BarDecoder().rows(pieces(data, [100], read), JSON, 10)
    assert sum(read) == len(data)  # the rest read (and dropped): the connection stays usable


async def test_the_event_loop_runs_between_the_steps_of_a_large_body() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    data = encoded(5000, JSON)
    rows = await BarDecoder().rows(pieces(data, [len(data)]), JSON, 5000)
    ticker.cancel()
    assert len(rows) == 5000
    assert ticks > 5000 // 128  # at least once per chunk of bars


async def _decode_two_at_once(first: BarDecoder, second: BarDecoder) -> tuple[datetime, datetime]:
    """When the first large body was done, and when the second was accepted."""
    data = encoded(3000, JSON)
    finished: list[datetime] = []

    async def decode(decoder: BarDecoder) -> list[BarRow]:
        rows = await decoder.rows(pieces(data, [len(data)]), JSON, 5000)
        finished.append(datetime.now(UTC))
        return rows

    rows_one, rows_two = await asyncio.gather(decode(first), decode(second))
    assert len(rows_one) == len(rows_two) == 3000
    return finished[0], rows_two[0].received_at


async def test_one_large_body_is_decoded_at_a_time() -> None:
    """The second waits with only its bytes: it is accepted once the first is done."""
    decoder = BarDecoder()
    first_done, second_accepted = await _decode_two_at_once(decoder, decoder)
    assert second_accepted > first_done


async def test_two_decoders_share_no_state() -> None:
    """Two apps in one process: neither waits for the other's decode, nor learns its
    symbols."""
    one, two = BarDecoder(), BarDecoder()
    first_done, second_accepted = await _decode_two_at_once(one, two)
    assert second_accepted < first_done  # decoded side by side
    one.rows_of(encoded(3, JSON, symbol="ONLY"), JSON, 10, NOW)
    assert "ONLY" in one.known.symbols
    assert "ONLY" not in two.known.symbols
    assert one.clock is not two.clock


def test_acceptance_times_never_go_backwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the wall clock steps back (NTP): each time after the one before."""
    clock = AcceptClock()
    wall = [datetime(2026, 1, 1, 12, tzinfo=UTC)]

    class SteppedBack(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return wall[0]

    monkeypatch.setattr(decoder_module, "datetime", SteppedBack)
    first = clock.now()
    wall[0] -= timedelta(seconds=5)
    second, third = clock.now(), clock.now()
    assert first == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert first < second < third
    assert second - first == timedelta(microseconds=1)


def test_ingest_runs_without_http() -> None:
    """No Litestar, no ``http`` package: benchmarks and tools decode bodies without them."""
    code = (
        "import sys, market_data_store.ingest; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litestar', 'uvicorn') "
        "or m.startswith('market_data_store.http')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
