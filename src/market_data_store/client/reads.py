"""The client's reads: ``GET /v1/bars`` as a stream of Core ``Bar``s, resumed where it
broke, and ``GET /v1/bars/latest``.

An export is asked for as NDJSON (``Accept-Encoding: gzip``) and read as it arrives:
at most ``CHUNK`` bytes of it are inflated at a time, and each run of complete lines is
decoded in one msgspec pass; a line longer than ``MAX_LINE`` is refused. Memory is
bounded by those, never by the size of the range.

An export that breaks (the connection dropped, a chunked body cut short, a read
timeout) or that the store refuses for now (503 when its export slots are taken, 429,
408, 5xx) is asked for again after the client's backoff (a 503's ``Retry-After``,
cut to ``max_hold``), from the ``cursor`` of the last bar received: the store starts
strictly after it, so nothing is read twice and nothing is skipped. The read gives up
(``ReadFailedError``) when ``deadline`` s pass without a bar arriving; a 4xx or an
answer that is not the store's is raised at once.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from market_data_store._util import backoff_delay
from market_data_store._util.cursor import encode_cursor
from market_data_store.contracts import Bar

from .errors import ReadFailedError
from .options import ClientStats
from .wire import BAD_JSON, decode_problem, retry_after

READ_PATH = "/v1/bars"
LATEST_PATH = "/v1/bars/latest"
NDJSON = "application/x-ndjson"
MAX_SYMBOLS = 1000
"""Most symbols the store takes in one read; longer lists go in parts, in order."""
CHUNK = 64 * 1024
"""Most bytes of an export inflated and decoded at once."""
MAX_LINE = 64 * 1024
"""Longest NDJSON line accepted (a bar is about 250 bytes)."""
MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""Most bytes of a problem or a ``latest`` answer read (1,000 bars are ~250 KiB)."""
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "not now": the read is asked for again (from where it got to)."""
TRANSPORT_ERRORS = (httpx.TransportError, TimeoutError, OSError)
"""A request that got no complete answer (an incomplete chunked body included)."""


class _ReadBar(msgspec.Struct, gc=False):
    """A bar as the store answers it (its ``provider`` and ``updated_at`` ignored)."""

    symbol: str
    resolution: str
    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    delayed: bool = False


class _LatestAnswer(msgspec.Struct):
    bars: list[_ReadBar]
    missing: list[str] = []


_rows = msgspec.json.Decoder(list[_ReadBar])
_latest = msgspec.json.Decoder(_LatestAnswer)


def _bar(row: _ReadBar) -> Bar:
    return Bar(
        symbol=row.symbol,
        ts=row.ts,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        resolution=row.resolution,
        delayed=row.delayed,
    )


@dataclass(frozen=True, slots=True)
class BarQuery:
    """One ``read_bars`` call, checked: ``symbols`` None for all of the provider's."""

    provider: str
    resolution: str
    symbols: tuple[str, ...] | None
    start: datetime | None
    end: datetime | None
    resample_from: str | None
    limit: int | None

    @classmethod
    def of(
        cls,
        provider: str,
        resolution: str,
        symbols: str | Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
        resample_from: str | None,
        limit: int | None,
    ) -> BarQuery:
        """``ValueError`` for what the store would refuse anyway (checked before a
        request is made; the store checks the rest: 400, ``ReadFailedError``)."""
        if not provider.strip():
            raise ValueError("provider must not be blank")
        if not resolution.strip():
            raise ValueError("resolution must not be blank")
        for name, moment in (("start", start), ("end", end)):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware (a naive time is ambiguous)")
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1")
        return cls(provider, resolution, symbol_list(symbols), start, end, resample_from, limit)

    def params(self, symbols: tuple[str, ...] | None) -> dict[str, str]:
        params = {"provider": self.provider, "resolution": self.resolution}
        if symbols is not None:
            params["symbols"] = ",".join(symbols)
        if self.start is not None:
            params["start"] = self.start.isoformat()
        if self.end is not None:
            params["end"] = self.end.isoformat()
        if self.resample_from is not None:
            params["resample_from"] = self.resample_from
        return params


def symbol_list(symbols: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``symbols`` as a tuple (a str is one symbol), or None for all of them."""
    if symbols is None:
        return None
    listed = (symbols,) if isinstance(symbols, str) else tuple(symbols)
    for symbol in listed:
        if not isinstance(symbol, str) or not symbol.strip() or "," in symbol:
            raise ValueError(f"not a symbol: {symbol!r}")
    return listed


def _parts(symbols: tuple[str, ...] | None) -> list[tuple[str, ...] | None]:
    if symbols is None:
        return [None]
    return [symbols[i : i + MAX_SYMBOLS] for i in range(0, len(symbols), MAX_SYMBOLS)]


class _Again(Exception):
    """This attempt failed in a way worth another (``hold``: the store's Retry-After)."""

    def __init__(self, why: str, hold: float | None = None) -> None:
        super().__init__(why)
        self.hold = hold


class _Attempts:
    """The retries of one read: counted since the last progress, given up ``deadline``
    s after it."""

    def __init__(self, reader: BarReader, what: str) -> None:
        self._reader = reader
        self._what = what
        self.count = 0  # requests made
        self.failed = 0  # failures since the last progress
        self.since = time.monotonic()
        self.last_error: str | None = None
        self.status: int | None = None
        self.problem: dict[str, Any] | None = None

    def progressed(self) -> None:
        self.failed = 0
        self.since = time.monotonic()

    async def wait(self, why: str, hold: float | None, received: int) -> None:
        """Wait before the next attempt, or raise ``ReadFailedError`` when the deadline
        would pass first."""
        reader = self._reader
        self.failed += 1
        self.last_error = why
        reader.stats.read_retries += 1
        if hold is None:
            delay = backoff_delay(
                self.failed, initial=reader.initial_backoff, maximum=reader.max_backoff, jitter=True
            )
        else:
            delay = min(hold * random.uniform(1.0, 1.1), reader.max_hold)
        left = self.since + reader.deadline - time.monotonic()
        if delay >= left:
            raise ReadFailedError(
                f"{self._what}: no progress within {reader.deadline:g}s (last error: {why})",
                status=self.status,
                problem=self.problem,
                attempts=self.count,
                last_error=why,
                received=received,
            )
        await asyncio.sleep(delay)


class BarReader:
    """Reads bars for a ``StoreClient``: over ``http()`` (its httpx client, made when
    first needed), with ``headers`` (its token, its producer id), its timeouts and its
    retry settings."""

    def __init__(
        self,
        http: Callable[[], httpx.AsyncClient],
        headers: Mapping[str, str],
        *,
        stats: ClientStats,
        deadline: float,
        initial_backoff: float,
        max_backoff: float,
        max_hold: float,
    ) -> None:
        self._http = http
        # gzip unless ``headers`` say otherwise; the media types are ours to say
        self._stream_headers = {"accept-encoding": "gzip", **headers, "accept": NDJSON}
        self._json_headers = {**headers, "accept": "application/json"}
        self.stats = stats
        self.deadline = deadline
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_hold = max_hold

    async def bars(self, query: BarQuery) -> AsyncGenerator[Bar, None]:
        """Every bar ``query`` names, in the store's order (symbol, in the list's order,
        then ts), each once; see the module docstring."""
        left = query.limit
        received = 0
        for symbols in _parts(query.symbols):
            attempts = _Attempts(self, "reading bars")
            cursor: str | None = None
            while left is None or left > 0:
                params = query.params(symbols)
                if cursor is not None:
                    params["cursor"] = cursor
                if left is not None:
                    params["limit"] = str(left)
                before = received
                attempts.count += 1
                self.stats.read_requests += 1
                try:
                    async with self._http().stream(
                        "GET", READ_PATH, params=params, headers=self._stream_headers
                    ) as response:
                        await self._check(response, attempts, received, NDJSON)
                        gzipped = _gzipped(response.headers.get("content-encoding"))
                        async for rows in _row_runs(response.aiter_raw(), gzipped):
                            for row in rows:
                                bar = _bar(row)
                                ts = row.ts.isoformat()
                                cursor = encode_cursor((row.symbol, row.resolution, ts))
                                received += 1
                                self.stats.bars_read += 1
                                if left is not None:
                                    left -= 1
                                yield bar
                    break  # this part is complete
                except _Again as again:
                    why, hold = str(again), again.hold
                except TRANSPORT_ERRORS as exc:
                    why, hold = _describe(exc), None
                except BAD_JSON as exc:
                    raise ReadFailedError(
                        f"the store's export is not NDJSON bars: {exc}",
                        status=200,
                        attempts=attempts.count,
                        received=received,
                    ) from None
                if received > before:
                    attempts.progressed()
                await attempts.wait(why, hold, received)

    async def latest(
        self, provider: str, symbols: tuple[str, ...], resolution: str
    ) -> dict[str, Bar]:
        """The newest bar of each of ``symbols`` that has one, by symbol, in their order."""
        found: dict[str, Bar] = {}
        for part in _parts(symbols):
            assert part is not None
            params = {"provider": provider, "symbols": ",".join(part), "resolution": resolution}
            answer = await self._latest(params)
            for row in answer.bars:
                found[row.symbol] = _bar(row)
        return found

    async def _latest(self, params: dict[str, str]) -> _LatestAnswer:
        attempts = _Attempts(self, "reading the latest bars")
        while True:
            attempts.count += 1
            self.stats.read_requests += 1
            try:
                async with self._http().stream(
                    "GET", LATEST_PATH, params=params, headers=self._json_headers
                ) as response:
                    await self._check(response, attempts, 0, "application/json")
                    content = await _bounded(response)
                    try:
                        return _latest.decode(content)
                    except BAD_JSON:
                        raise ReadFailedError(
                            "a success answer that is not the store's (check base_url)",
                            status=response.status_code,
                            problem=decode_problem(response.status_code, content),
                            attempts=attempts.count,
                        ) from None
            except _Again as again:
                why, hold = str(again), again.hold
            except TRANSPORT_ERRORS as exc:
                why, hold = _describe(exc), None
            await attempts.wait(why, hold, 0)

    async def _check(
        self, response: httpx.Response, attempts: _Attempts, received: int, media: str
    ) -> None:
        """Return for a 200 of ``media``; raise ``_Again`` for an answer worth another
        attempt, ``ReadFailedError`` for any other."""
        status = response.status_code
        if status == 200:
            content_type = response.headers.get("content-type", "")
            if content_type.split(";", 1)[0].strip().lower() == media:
                return
            content = await _bounded(response)
            raise ReadFailedError(
                f"a success answer that is not the store's ({content_type or 'no type'}; "
                "check base_url)",
                status=status,
                problem=decode_problem(status, content),
                attempts=attempts.count,
                received=received,
            )
        content = await _bounded(response)
        problem = decode_problem(status, content)
        attempts.status, attempts.problem = status, problem
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        if status in RETRIED_STATUSES:
            hold = None
            if status in (503, 429):
                hold = retry_after(response.headers.get("retry-after"), problem, most=self.max_hold)
            raise _Again(f"HTTP {status}: {detail}", hold)
        errors = problem.get("errors")
        listed = (
            "; ".join(f"{e.get('key')}: {e.get('message')}" for e in errors if isinstance(e, dict))
            if isinstance(errors, list)
            else ""
        )
        raise ReadFailedError(
            f"the store refused the read with HTTP {status}: {detail}"
            + (f" [{listed}]" if listed else ""),
            status=status,
            problem=problem,
            attempts=attempts.count,
            received=received,
        )


async def _row_runs(
    raw: AsyncIterator[bytes], gzipped: bool
) -> AsyncGenerator[list[_ReadBar], None]:
    """The bars of an NDJSON body, a run of whole lines at a time. Raises ``_Again``
    when the body ends in the middle of a line (or of its gzip stream)."""
    inflater = zlib.decompressobj(wbits=31) if gzipped else None
    rest = b""
    async for received in raw:
        for piece in _inflated(inflater, received):
            data = rest + piece if rest else piece
            end = data.rfind(b"\n")
            if end < 0:
                rest = data
                if len(rest) > MAX_LINE:
                    raise msgspec.DecodeError(f"a line of over {MAX_LINE} bytes")
                continue
            rest = data[end + 1 :]
            if len(rest) > MAX_LINE:
                raise msgspec.DecodeError(f"a line of over {MAX_LINE} bytes")
            block = data[:end].rstrip(b"\r\n")
            if block:  # lines hold no raw newline (JSON escapes it): one array of them
                yield _rows.decode(b"[" + block.replace(b"\n", b",") + b"]")
    if rest.strip() or (inflater is not None and not inflater.eof):
        raise _Again("the export ended in the middle of a bar")


def _inflated(inflater: zlib._Decompress | None, data: bytes) -> Iterator[bytes]:
    """``data`` inflated, at most ``CHUNK`` bytes at a time."""
    if inflater is None:
        yield data
        return
    try:
        out = inflater.decompress(data, CHUNK)
        while True:
            if out:
                yield out
            if not inflater.unconsumed_tail:
                return
            out = inflater.decompress(inflater.unconsumed_tail, CHUNK)
    except zlib.error as exc:
        raise msgspec.DecodeError(f"not gzip: {exc}") from None


def _gzipped(coding: str | None) -> bool:
    codings = [c.strip().lower() for c in (coding or "").split(",") if c.strip()]
    if not codings or codings == ["identity"]:
        return False
    if codings in (["gzip"], ["x-gzip"]):
        return True
    raise msgspec.DecodeError(f"a content coding not asked for: {coding!r}")


async def _bounded(response: httpx.Response) -> bytes:
    """The (decoded) body, at most ``MAX_ANSWER_BYTES`` of it."""
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) > MAX_ANSWER_BYTES:
            break
    return bytes(content)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
