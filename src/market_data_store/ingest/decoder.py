"""``BarDecoder``: request bodies into rows, with the state that belongs to one app.

Its acceptance clock, the symbols and resolutions it has found valid, its decoders,
and the gate that lets one large body be decoded at a time: one decoder per app,
so two apps in one process share none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Generator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from market_data_store.storage import DEFAULT_TENANT, BarRow

from .bounds import CsvBound, JsonBound
from .codec import JSON, Codec
from .csv_body import CSV, csv_rows_in_steps
from .errors import TooManyBarsError
from .rows import KnownValues, rows_in_steps

# Bodies up to this size are decoded in one go (a millisecond at most); larger ones in
# steps of CHUNK_BARS bars on the event loop, which answers other requests (probes)
# between two steps: several large bodies decode interleaved, step by step.
# One large body is decoded at a time (the others wait with only their bytes): four at
# once take no less CPU in all, and hold four sets of raw views and rows.
INLINE_DECODE_BYTES = 16 * 1024


class AcceptClock:
    """Acceptance times that never go backwards for one clock, even if the wall
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


class BarDecoder:
    """Turns POST /v1/bars bodies into rows (``rows``); one per app, created at start-up.

    Holds the app's ``AcceptClock`` (``received_at`` of every row), the symbols and
    resolutions found valid so far (the fast path's test, bounded), one ``Codec`` per
    media type and cap, and the gate that decodes one large body at a time."""

    def __init__(self) -> None:
        self.clock = AcceptClock()
        self.known = KnownValues()
        self._codecs: dict[tuple[str, int], Codec] = {}
        self.gate = DecodeGate()

    async def rows(
        self,
        body: AsyncIterable[bytes],
        media_type: str,
        max_bars: int,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[BarRow]:
        """The rows of a body read from ``body`` (its pieces as they arrive), accepted
        now, ``tenant``'s; ``MalformedBodyError``, ``TooManyBarsError`` or ``InvalidBodyError``
        otherwise (400, 413, 422). A JSON or CSV body is refused as soon as its pieces
        hold more than ``max_bars`` bars may (the rest is read and dropped). A body over
        ``INLINE_DECODE_BYTES`` is decoded in steps, one such body at a time, the event
        loop running between two steps."""
        if media_type == CSV:
            data = await read_body(body, CsvBound(max_bars))
            size = len(data)
            rows = csv_rows_in_steps(
                data, max_bars, self.clock.now(), self.known, counted=True, tenant=tenant
            )
            del data  # the generator holds it as long as it needs it
            if size <= INLINE_DECODE_BYTES:
                return run_steps(rows)
            async with self.gate():
                return await drive_steps(rows)
        data = await read_body(body, JsonBound(max_bars) if media_type == JSON else None)
        if len(data) <= INLINE_DECODE_BYTES:
            return self.rows_of(data, media_type, max_bars, self.clock.now(), tenant=tenant)
        async with self.gate():
            steps = rows_in_steps(
                self._codec(media_type, max_bars),
                data,
                self.clock.now(),
                self.known,
                counted=True,
                tenant=tenant,
            )
            del data  # the generator holds it as long as it needs it
            return await drive_steps(steps)

    def rows_of(
        self,
        body: bytes | bytearray,
        media_type: str,
        max_bars: int,
        received_at: datetime,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[BarRow]:
        """The rows of a body in memory (``rows_in_steps``, or ``csv_rows_in_steps``, run
        to the end in one go)."""
        if media_type == CSV:
            return run_steps(
                csv_rows_in_steps(body, max_bars, received_at, self.known, tenant=tenant)
            )
        return run_steps(
            rows_in_steps(
                self._codec(media_type, max_bars), body, received_at, self.known, tenant=tenant
            )
        )

    def _codec(self, media_type: str, max_bars: int) -> Codec:
        codec = self._codecs.get((media_type, max_bars))
        if codec is None:
            codec = self._codecs[(media_type, max_bars)] = Codec(media_type, max_bars)
        return codec


class DecodeGate:
    """One large body decoded at a time, of any kind (per event loop: a test may run an
    app in several): ``async with gate():``."""

    def __init__(self) -> None:
        self._decoding: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._decoding is None or self._decoding[0] is not loop:
            self._decoding = (loop, asyncio.Semaphore(1))
        return self._decoding[1]


R = TypeVar("R")


def run_steps(steps: Generator[None, None, R]) -> R:
    """A decoding generator run to its end in one go: its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: R = done.value
            return result


async def drive_steps(steps: Generator[None, None, R]) -> R:
    """A decoding generator run to its end, the event loop running between two steps."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: R = done.value
            return result
        await asyncio.sleep(0)


async def read_body(pieces: AsyncIterable[bytes], bound: JsonBound | CsvBound | None) -> bytearray:
    """The body in one buffer, grown in place as its pieces arrive (collecting them
    and joining would hold twice the body at its peak). A JSON or CSV body is
    pre-counted piece by piece: once it holds more than the cap allows, the rest is read and
    dropped, and ``TooManyBarsError`` raised."""
    body = bytearray()
    refused: TooManyBarsError | None = None
    async for piece in pieces:
        if refused is not None:
            continue
        if bound is not None:
            try:
                bound.feed(piece)
            except TooManyBarsError as exc:
                refused, body = exc, bytearray()
                continue
        body += piece
    if refused is not None:
        raise refused
    return body
