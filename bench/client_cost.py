"""The producer client's own CPU: per request (httpx vs the lean HTTP/1.1 pool) and per
bar (0.4.0's ``to_wire`` vs this tree's), then whole clients against a raw one.

    .venv/bin/python bench/client_cost.py [--rounds 5] [--requests 2000] [--bars 5000]

A trivial store runs in a child process (``--serve``: reads each ``POST`` body by its
Content-Length and answers the store's 201 JSON to ``?wait=commit``), so the figures are the client
process's CPU time (``time.process_time``) and nothing of the server's. Variants
alternate round by round on the same machine; each figure is the median of the rounds
(the ratios are what carry over to a shared, noisy machine).

1. **Per request**, 4 requests in flight: httpx as the sender used it (``stream`` +
   ``aiter_bytes`` under ``asyncio.timeout``), ``Http1Pool.post``, and a raw client
   writing pre-built requests on 4 sockets (the floor). With a 1-bar body (the
   overhead alone) and a ``--bars`` body.
2. **Per bar**: ``to_wire`` + ``encode_body`` of ``--bars`` bars, 0.4.0's (a copy
   below, ``old_to_wire``) against this tree's (``to_wire_all``, as ``write`` does),
   for Core ``Bar`` models, dicts of ``Decimal`` and aware ``datetime``, dicts of
   floats, and dicts of text.
3. **Whole clients**: ``StoreClient.write`` of ``--total`` bars (Core ``Bar`` models,
   ``batch_size=--bars``, 4 in flight, no feedback stream) with 0.4.0's costs (old
   ``to_wire`` patched in, httpx) and with this tree's defaults, against raw clients
   POSTing the same bodies pre-encoded: bars/s and client CPU per bar; the target
   (issue 17 (c)) is a default client at >= 0.9 of the raw clients' bars/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import httpx
from market_data_core import Bar

from market_data_store.client import StoreClient, store_client
from market_data_store.client.http1 import Http1Pool
from market_data_store.client.sender import MAX_ANSWER_BYTES
from market_data_store.client.wire import MSGPACK, encode_body, to_wire, to_wire_all

ANSWER = (  # as the store answers ?wait=commit (what the default client asks for)
    b'{"accepted":1,"level":"ok","queue_size":0,"capacity":100000,"coordinator_id":"b/bars",'
    b'"credit":100000,"committed":1,"dead_lettered":0}'
)
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
HEADERS = {"content-type": MSGPACK, "accept": "application/json"}
IN_FLIGHT = 4


# -- 0.4.0's to_wire, verbatim (the baseline; kept once, beside the wire tests) --------


def _baseline() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tests" / "support" / "wire_0_4_0.py"
    spec = importlib.util.spec_from_file_location("wire_0_4_0", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the baseline {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_old = _baseline()
old_to_wire: Callable[[Any, int], Any] = _old.to_wire
old_encode_body: Callable[[str, list[Any]], bytes] = _old.encode_body


# -- the trivial store (child process) ---------------------------------------------------


class _StoreProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.answer = (
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            start = head.find(b"content-length:")
            size = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + size:
                return
            del self.buffer[: end + 4 + size]
            assert self.transport is not None
            self.transport.write(self.answer)


def serve(port: int) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_StoreProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def store_process() -> Iterator[str]:
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(10)


# -- data ------------------------------------------------------------------------------------


def decimal_dicts(n: int) -> list[dict[str, Any]]:
    return [
        {
            "symbol": f"S{i % 500:03d}",
            "ts": T0 + timedelta(minutes=i // 500),
            "open": Decimal("187.15") + i % 97,
            "high": Decimal("187.40") + i % 97,
            "low": Decimal("186.90") + i % 97,
            "close": Decimal("187.02") + i % 97,
            "volume": Decimal(120034 + i),
            "resolution": "1m",
        }
        for i in range(n)
    ]


def float_dicts(n: int) -> list[dict[str, Any]]:
    return [{**d, **{k: float(d[k]) for k in ("open", "high", "low", "close", "volume")}}
            for d in decimal_dicts(n)]  # fmt: skip


def text_dicts(n: int) -> list[dict[str, Any]]:
    """Every field as text (RFC 3339 times, decimal strings): what a CSV or JSON feed
    hands a producer, and what ``bench/control.py`` writes."""
    return [{k: (v.isoformat().replace("+00:00", "Z") if k == "ts" else str(v))
             for k, v in d.items()} for d in decimal_dicts(n)]  # fmt: skip


def models(n: int) -> list[Bar]:
    return [Bar(**d) for d in decimal_dicts(n)]


# -- 1. per request ----------------------------------------------------------------------


Round = Callable[[str, bytes, int], Coroutine[Any, Any, float]]
"""Sends ``count`` requests after a warm-up; the client CPU s they took."""


async def httpx_round(url: str, body: bytes, count: int) -> float:
    async with httpx.AsyncClient(
        base_url=url,
        limits=httpx.Limits(max_connections=IN_FLIGHT + 1, max_keepalive_connections=IN_FLIGHT + 1),
        follow_redirects=False,
    ) as client:

        async def one() -> None:  # as the sender did
            async with (
                asyncio.timeout(30),
                client.stream(
                    "POST", "/v1/bars", content=body, params=None, headers=HEADERS
                ) as response,
            ):
                content = b""
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_ANSWER_BYTES:
                        break
                assert response.status_code in (201, 202)

        return await _timed(one, count)


async def http1_round(url: str, body: bytes, count: int) -> float:
    pool = Http1Pool(url, max_connections=IN_FLIGHT, max_body=MAX_ANSWER_BYTES)
    try:

        async def one() -> None:
            status, _, _ = await pool.post("/v1/bars", body, None, HEADERS, 30)
            assert status in (201, 202)

        return await _timed(one, count)
    finally:
        await pool.aclose()


async def raw_round(url: str, body: bytes, count: int) -> float:
    """Pre-built requests on ``IN_FLIGHT`` sockets, answers read by their length."""
    streams = [await _open(url) for _ in range(IN_FLIGHT)]
    request = _request(body)
    free = list(streams)
    try:

        async def one() -> None:
            reader, writer = free.pop()
            writer.write(request)
            assert await _answer(reader) is None
            free.append((reader, writer))

        return await _timed(one, count)
    finally:
        for _, writer in streams:
            writer.close()
            await writer.wait_closed()


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(url: str) -> Streams:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


def _request(body: bytes) -> bytes:
    return (
        b"POST /v1/bars HTTP/1.1\r\nhost: bench\r\ncontent-type: application/msgpack\r\n"
        b"accept: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body


async def _answer(reader: asyncio.StreamReader) -> float | None:
    """Reads an answer: None if accepted, the seconds to wait if refused (503/429)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    start = lower.find(b"content-length:")
    await reader.readexactly(int(head[start + 15 :].split(b"\r\n", 1)[0]))
    if head[9:12] in (b"503", b"429"):
        start = lower.find(b"retry-after:")
        return float(head[start + 12 :].split(b"\r\n", 1)[0]) if start >= 0 else 0.1
    assert head[9:12] in (b"201", b"202"), head[:40]
    return None


async def _timed(one: Callable[[], Awaitable[None]], count: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await asyncio.gather(*(worker(1) for _ in range(IN_FLIGHT)))  # connections open
    cpu = time.process_time()
    await asyncio.gather(*(worker(count // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    return time.process_time() - cpu


def cpu_of(action: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(CPU s of this process, wall s) of running ``action`` on a new event loop."""

    async def timed() -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        await action()
        return time.process_time() - cpu, time.perf_counter() - wall

    return asyncio.run(timed())


def per_request(url: str, rounds: int, requests: int, bars: int) -> None:
    body_of = {
        "1 bar": encode_body("bench", [to_wire(b, 0) for b in models(1)]),
        f"{bars} bars": encode_body("bench", [to_wire(b, 0) for b in models(bars)]),
    }
    variants: dict[str, Round] = {"httpx": httpx_round, "http1": http1_round, "raw": raw_round}
    print(f"\n1. Per request: client CPU µs/request, {IN_FLIGHT} in flight, median of {rounds}")
    print(f"   {'body':<12} {'httpx':>9} {'http1':>9} {'raw':>9} {'http1/httpx':>12}"
          f" {'httpx-raw':>10} {'http1-raw':>10}")  # fmt: skip
    for label, body in body_of.items():
        count = requests if len(body) < 10_000 else max(IN_FLIGHT * 10, requests // 20)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, variant in variants.items():
                cpu = asyncio.run(variant(url, body, count))
                samples[name].append(cpu / (count // IN_FLIGHT * IN_FLIGHT) * 1e6)
        m = {name: statistics.median(values) for name, values in samples.items()}
        print(
            f"   {label:<12} {m['httpx']:>9.1f} {m['http1']:>9.1f} {m['raw']:>9.1f} "
            f"{m['http1'] / m['httpx']:>12.2f} {m['httpx'] - m['raw']:>10.1f} "
            f"{m['http1'] - m['raw']:>10.1f}"
        )


# -- 2. per bar --------------------------------------------------------------------------------


def per_bar(rounds: int, bars: int) -> None:
    inputs: dict[str, list[Any]] = {
        "Core Bar models": models(bars),
        "dicts, Decimal + datetime": decimal_dicts(bars),
        "dicts, floats + datetime": float_dicts(bars),
        "dicts of text": text_dicts(bars),
    }
    print(f"\n2. Per bar: to_wire(_all) + encode_body, ns/bar, best of {rounds * 3} ({bars} bars)")
    print(f"   {'input':<28} {'0.4.0':>8} {'now':>8} {'now/0.4.0':>10} {'body 0.4.0/now B':>17}")
    for label, written in inputs.items():

        def old(written: list[Any] = written) -> bytes:
            return old_encode_body("bench", [old_to_wire(b, i) for i, b in enumerate(written)])

        def new(written: list[Any] = written) -> bytes:  # as StoreClient.write does
            return encode_body("bench", to_wire_all(written))

        best = {"old": math.inf, "new": math.inf}
        for _ in range(rounds * 3):
            best["old"] = min(best["old"], timeit.timeit(old, number=1))
            best["new"] = min(best["new"], timeit.timeit(new, number=1))
        o, n = best["old"] / bars * 1e9, best["new"] / bars * 1e9
        sizes = f"{len(old()) / bars:.0f}/{len(new()) / bars:.0f}"
        print(f"   {label:<28} {o:>8.0f} {n:>8.0f} {n / o:>10.2f} {sizes:>17}")


# -- 3. whole clients ------------------------------------------------------------------------


def _old_to_wire_all(bars: list[Any]) -> list[Any]:
    return [old_to_wire(b, i) for i, b in enumerate(bars)]


async def client_round(url: str, written: list[Bar], batch: int, *, before: bool) -> None:
    options: dict[str, Any] = {
        "batch_size": batch,
        "max_in_flight": IN_FLIGHT,
        "follow_feedback": False,
    }
    if before:  # 0.4.0's costs: its to_wire, httpx
        options["transport"] = httpx.AsyncHTTPTransport()
    saved = vars(store_client)["to_wire_all"]
    if before:
        setattr(store_client, "to_wire_all", _old_to_wire_all)  # noqa: B010 (not exported)
    try:
        async with StoreClient(url, provider="bench", **options) as client:
            for first in range(0, len(written), batch):
                await client.write(written[first : first + batch])
        assert client.stats.bars_sent == len(written)
        assert (client._lean is None) is before
    finally:
        setattr(store_client, "to_wire_all", saved)  # noqa: B010


async def raw_clients_round(url: str, bodies: list[bytes]) -> None:
    """``IN_FLIGHT`` raw clients taking the pre-encoded bodies in turn."""
    queue = list(reversed(bodies))

    async def connection() -> None:
        reader, writer = await _open(url)
        try:
            while queue:
                request = _request(queue.pop())
                while True:
                    writer.write(request)
                    wait = await _answer(reader)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)  # refused: as a client must
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(IN_FLIGHT)))


def whole_clients(url: str, rounds: int, bars: int, total: int) -> None:
    written = models(total)
    bodies = [
        encode_body("bench", [to_wire(b, i) for i, b in enumerate(written[first : first + bars])])
        for first in range(0, total, bars)
    ]
    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "raw (pre-encoded)": lambda: raw_clients_round(url, bodies),
        "client, 0.4.0 costs": lambda: client_round(url, written, bars, before=True),
        "client, now": lambda: client_round(url, written, bars, before=False),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    rate: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, action in variants.items():
            spent, wall = cpu_of(action)
            cpu[name].append(spent / total * 1e6)
            rate[name].append(total / wall)
    print(f"\n3. Whole clients: {total:,} Core Bar models, batches of {bars}, {IN_FLIGHT} in "
          f"flight, median of {rounds}")  # fmt: skip
    print(f"   {'variant':<22} {'bars/s':>10} {'of raw':>7} {'client CPU µs/bar':>18}")
    raw_rate = statistics.median(rate["raw (pre-encoded)"])
    for name in variants:
        r = statistics.median(rate[name])
        print(
            f"   {name:<22} {r:>10,.0f} {r / raw_rate:>7.2f} {statistics.median(cpu[name]):>18.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000, help="1-bar requests a round")
    parser.add_argument("--bars", type=int, default=5000, help="bars a body (batch_size)")
    parser.add_argument("--total", type=int, default=200_000, help="bars a whole-client round")
    parser.add_argument(
        "--url",
        help="a running store for parts 1 and 3 (e.g. mds-store serve in another process) "
        "instead of the trivial one: part 3's 'of raw' is then issue 17's measure",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    where = args.url or "a trivial server in a child process"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loadavg "
          f"{os.getloadavg()[0]:.2f}; store: {where}")  # fmt: skip
    per_bar(args.rounds, args.bars)
    with contextlib.nullcontext(args.url) if args.url else store_process() as url:
        per_request(url, args.rounds, args.requests, args.bars)
        whole_clients(url, args.rounds, args.bars, args.total)


if __name__ == "__main__":
    main()
