"""Reads (issue 21): exports (CSV, NDJSON, gzip), cursors, latest, resampling, over real
HTTP from a real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from market_data_store._util.cursor import encode_cursor
from tests.support.bars import wire_bar
from tests.support.facts import body as fact_body
from tests.support.service import RunningService, running_service, service_settings
from tests.support.waits import until

ALPHA, BETA = "alpha-token-0123456789", "beta-token-0123456789"
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
CSV_HEADER = "provider,symbol,resolution,ts,open,high,low,close,volume,delayed,updated_at"


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url, str(tmp_path), MDS_READS_MAX_EXPORTS="1", MDS_DATABASE_POOL_MAX_SIZE="8"
    )
    async with running_service(settings) as svc:
        yield svc


@pytest.fixture
async def tenants(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_AUTH_TENANTS=json.dumps({"alpha": ALPHA, "beta": BETA}),
    )
    async with running_service(settings) as svc:
        yield svc


async def every_page(
    service: RunningService, path: str, params: dict[str, str], key: str
) -> list[dict[str, Any]]:
    """Every row of a JSON read, following ``next`` from page to page."""
    params, rows = dict(params), []
    while True:
        page = (await service.client.get(path, params=params)).json()
        rows += page[key]
        if not page["next"]:
            return rows
        params["cursor"] = page["next"]


def minute_bars(symbol: str, n: int, *, start: int = 0, step: int = 1) -> list[dict[str, Any]]:
    """``n`` 1-minute bars of ``symbol`` from ``T0 + start`` minutes, prices by number."""
    out = []
    for i in range(start, start + n * step, step):
        price = Decimal(10_000 + i).scaleb(-2)
        out.append(
            wire_bar(
                0,
                symbol=symbol,
                ts=(T0 + timedelta(minutes=i)).isoformat(),
                open=str(price),
                high=str(price + 1),
                low=str(price - 1),
                close=str(price + Decimal("0.5")),
                volume=str(10 + i),
                delayed=False,
            )
        )
    return out


async def put(
    svc: RunningService,
    bars: list[dict[str, Any]],
    *,
    provider: str = "ibkr",
    token: str | None = None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for part in range(0, len(bars), 5000):
        answer = await svc.client.post(
            "/v1/bars",
            params={"wait": "commit"},
            json={"provider": provider, "bars": bars[part : part + 5000]},
            headers=headers,
        )
        assert answer.status_code == 201, answer.text


def query(**extra: str) -> dict[str, str]:
    return {"provider": "ibkr", "resolution": "1m", **extra}


async def test_csv_export_streams_every_bar_with_a_header(service: RunningService) -> None:
    await put(service, minute_bars("MSFT", 3) + minute_bars("AAPL", 12_000))
    answer = await service.client.get("/v1/bars", params=query(), headers={"Accept": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    lines = answer.text.splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) == 1 + 12_003  # no 10,000 cap: every bar
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    # all of the provider's symbols, in the key's order: AAPL's bars first, by ts
    assert [r["symbol"] for r in rows[:12_000]] == ["AAPL"] * 12_000
    assert rows[0]["ts"] == "2024-01-01T00:00:00Z"
    assert rows[1]["ts"] == "2024-01-01T00:01:00Z"
    assert (rows[1]["open"], rows[1]["close"], rows[1]["volume"]) == ("100.01", "100.51", "11")
    assert rows[0]["delayed"] == "false"
    assert rows[0]["updated_at"].endswith("Z")
    datetime.fromisoformat(rows[0]["updated_at"])
    assert [r["symbol"] for r in rows[12_000:]] == ["MSFT"] * 3


async def test_export_of_a_list_follows_its_order_and_limit(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 5) + minute_bars("MSFT", 5) + minute_bars("IBM", 5))
    answer = await service.client.get(
        "/v1/bars",
        params=query(symbols="msft, ibm,MSFT", limit="7"),
        headers={"Accept": "text/csv"},
    )
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["symbol"] for r in rows] == ["MSFT"] * 5 + ["IBM"] * 2


async def test_ndjson_export_is_exact_json_per_line(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 3))
    answer = await service.client.get(
        "/v1/bars", params=query(symbol="AAPL"), headers={"Accept": "application/x-ndjson"}
    )
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = answer.text.splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["ts"] == "2024-01-01T00:00:00Z"
    assert (first["open"], first["high"], first["volume"]) == ("100.00", "101.00", "10")
    assert first["delayed"] is False
    assert first["provider"] == "ibkr"
    assert set(first) == set(CSV_HEADER.split(","))


async def test_ndjson_of_news_keeps_quotes_and_backslashes(service: RunningService) -> None:
    title = 'He said "buy" \\ sell, then\ttabbed'
    payload = fact_body("news", 1, title=title.replace("\t", " "))
    answer = await service.client.post("/v1/news", params={"wait": "commit"}, json=payload)
    assert answer.status_code == 201, answer.text
    for accept in ("application/x-ndjson", "text/csv"):
        got = await service.client.get(
            "/v1/news", params={"provider": "ibkr"}, headers={"Accept": accept}
        )
        assert got.status_code == 200, got.text
        if accept == "text/csv":
            (row,) = csv.DictReader(io.StringIO(got.text))
        else:
            (line,) = got.text.splitlines()
            row = json.loads(line)
        assert row["title"] == title.replace("\t", " ")


async def test_gzip_is_honoured(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 2000))
    plain = await service.client.get(
        "/v1/bars", params=query(), headers={"Accept": "text/csv", "Accept-Encoding": "identity"}
    )
    packed = await service.client.get(
        "/v1/bars", params=query(), headers={"Accept": "text/csv", "Accept-Encoding": "gzip"}
    )
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert packed.text == plain.text  # httpx decodes it
    assert len(packed.content) == len(plain.content)


async def test_json_pages_through_the_cursor_are_every_bar_once(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 25) + minute_bars("MSFT", 10))
    seen: list[tuple[str, str]] = []
    params = query(symbols="MSFT,AAPL", limit="7")
    pages = 0
    while True:
        page = (await service.client.get("/v1/bars", params=params)).json()
        pages += 1
        seen += [(b["symbol"], b["ts"]) for b in page["bars"]]
        if page["next"] is None:
            assert page["truncated"] is False
            break
        assert page["truncated"] is True
        params["cursor"] = page["next"]
        if pages == 2:  # bars written before the cursor meanwhile are not read again
            await put(service, minute_bars("MSFT", 1, start=-5))
    assert len(seen) == len(set(seen)) == 35
    assert [s for s, _ in seen] == ["MSFT"] * 10 + ["AAPL"] * 25
    assert pages == 5


async def test_pages_of_all_symbols_follow_the_key(service: RunningService) -> None:
    await put(service, minute_bars("B", 3) + minute_bars("A", 3))
    bars = await every_page(service, "/v1/bars", query(limit="2"), "bars")
    seen = [(b["symbol"], b["ts"]) for b in bars]
    assert seen == sorted(seen)
    assert len(seen) == 6


async def test_an_export_resumes_after_the_last_row_received(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 100))
    whole = await service.client.get("/v1/bars", params=query(), headers={"Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(whole.text)))
    last = rows[41]  # the client got this far
    cursor = encode_cursor([last["symbol"], last["resolution"], last["ts"]])
    rest = await service.client.get(
        "/v1/bars", params=query(cursor=cursor), headers={"Accept": "text/csv"}
    )
    assert list(csv.DictReader(io.StringIO(rest.text))) == rows[42:]


async def test_exports_beyond_the_cap_are_503_and_pages_go_on(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 20_000))
    url = f"{service.base_url}/v1/bars"
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", url, params=query(), headers={"Accept": "text/csv"}) as held,
    ):
        assert held.status_code == 200
        second = await service.client.get(
            "/v1/bars", params=query(), headers={"Accept": "text/csv"}
        )
        assert second.status_code == 503
        assert second.headers["content-type"] == "application/problem+json"
        assert "Retry-After" in second.headers
        page = await service.client.get("/v1/bars", params=query(limit="5"))
        assert page.status_code == 200
        assert page.json()["count"] == 5
    # the held export ended (the client went away): its slot is free again
    for _ in range(50):
        again = await service.client.get(
            "/v1/bars", params=query(limit="3"), headers={"Accept": "text/csv"}
        )
        if again.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert again.status_code == 200
    assert len(again.text.splitlines()) == 4


async def test_latest_bars_and_quotes(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 30) + minute_bars("MSFT", 3, start=100))
    answer = await service.client.get(
        "/v1/bars/latest",
        params={"provider": "ibkr", "resolution": "1m", "symbols": "msft,NONE,AAPL"},
    )
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert [(b["symbol"], b["ts"]) for b in got["bars"]] == [
        ("MSFT", "2024-01-01T01:42:00Z"),
        ("AAPL", "2024-01-01T00:29:00Z"),
    ]
    assert got["missing"] == ["NONE"]
    assert got["count"] == 2
    quotes = fact_body("quotes", 4)
    assert (
        await service.client.post("/v1/quotes", params={"wait": "commit"}, json=quotes)
    ).status_code == 201
    latest = (
        await service.client.get(
            "/v1/quotes/latest",
            params={"provider": "ibkr", "symbols": quotes["quotes"][0]["symbol"]},
        )
    ).json()
    newest = max(q["timestamp"] for q in quotes["quotes"])
    assert len(latest["quotes"]) == 1
    assert datetime.fromisoformat(latest["quotes"][0]["timestamp"]) == datetime.fromisoformat(
        newest
    )


@pytest.mark.parametrize(
    "params",
    [
        {"provider": "ibkr", "resolution": "1m"},  # no symbols
        {"provider": "ibkr", "resolution": "1m", "symbols": ",".join(["A"] * 1001)},
        {"provider": "ibkr", "resolution": "1x", "symbols": "A"},
        {"provider": "ibkr", "resolution": "1m", "symbols": "A,\u0410"},
    ],
)
async def test_bad_latest_queries_are_400(service: RunningService, params: dict[str, str]) -> None:
    answer = await service.client.get("/v1/bars/latest", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_resampling_is_exact(service: RunningService) -> None:
    # 3 days of 1-minute bars, and a bar of the next month
    await put(service, minute_bars("AAPL", 3 * 1440) + minute_bars("AAPL", 1, start=31 * 1440))
    hour = (
        await service.client.get(
            "/v1/bars", params=query(resolution="1h", resample_from="1m", limit="100")
        )
    ).json()["bars"]
    assert len(hour) == 3 * 24 + 1
    first = hour[0]
    assert first["resolution"] == "1h"
    assert first["ts"] == "2024-01-01T00:00:00Z"
    assert first["open"] == "100.00"  # bar 0's open
    assert first["close"] == "101.09"  # bar 59's close
    assert first["high"] == "101.59"  # bar 59's high
    assert first["low"] == "99.00"  # bar 0's low
    assert first["volume"] == str(sum(10 + i for i in range(60)))
    days = (
        await service.client.get("/v1/bars", params=query(resolution="1d", resample_from="1m"))
    ).json()["bars"]
    assert [d["ts"] for d in days] == [
        "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z",
        "2024-02-01T00:00:00Z",
    ]  # fmt: skip
    weeks = (
        await service.client.get("/v1/bars", params=query(resolution="1w", resample_from="1m"))
    ).json()["bars"]
    assert [w["ts"] for w in weeks] == ["2024-01-01T00:00:00Z", "2024-01-29T00:00:00Z"]
    months = (
        await service.client.get("/v1/bars", params=query(resolution="1mo", resample_from="1m"))
    ).json()["bars"]
    assert [m["ts"] for m in months] == ["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]
    assert months[0]["volume"] == str(sum(10 + i for i in range(3 * 1440)))
    # the same through the cursor, in pages of 5, and as CSV
    params = query(resolution="1h", resample_from="1m", limit="5")
    paged = await every_page(service, "/v1/bars", params, "bars")
    assert [b["ts"] for b in paged] == [h["ts"] for h in hour]
    exported = await service.client.get(
        "/v1/bars",
        params=query(resolution="1h", resample_from="1m"),
        headers={"Accept": "text/csv"},
    )
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["ts"], r["open"], r["close"]) for r in rows] == [
        (h["ts"], h["open"], h["close"]) for h in hour
    ]


@pytest.mark.parametrize(
    ("resolution", "source"),
    [("1m", "1m"), ("1m", "1h"), ("7m", "2m"), ("1w", "2d"), ("1mo", "1w"), ("1d", "1mo")],
)
async def test_inexact_resampling_is_400(
    service: RunningService, resolution: str, source: str
) -> None:
    answer = await service.client.get(
        "/v1/bars", params=query(resolution=resolution, resample_from=source)
    )
    assert answer.status_code == 400, answer.text
    assert "resample_from" in answer.text


async def test_exports_and_latest_are_the_tenants_own(tenants: RunningService) -> None:
    await put(tenants, minute_bars("AAPL", 3), token=ALPHA)
    await put(tenants, minute_bars("AAPL", 5, start=1), token=BETA)
    for token, n in ((ALPHA, 3), (BETA, 5)):
        headers = {"Authorization": f"Bearer {token}"}
        exported = await tenants.client.get(
            "/v1/bars", params=query(), headers={**headers, "Accept": "text/csv"}
        )
        assert len(exported.text.splitlines()) == 1 + n
        latest = (
            await tenants.client.get(
                "/v1/bars/latest", params=query(symbols="AAPL"), headers=headers
            )
        ).json()["bars"]
        assert len(latest) == 1
    unknown = await tenants.client.get(
        "/v1/bars", params=query(), headers={"Accept": "text/csv", "Authorization": "Bearer no"}
    )
    assert unknown.status_code == 401


async def test_a_gzip_stream_is_valid_gzip(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 100))
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "GET",
            f"{service.base_url}/v1/bars",
            params=query(),
            headers={"Accept": "application/x-ndjson", "Accept-Encoding": "gzip"},
        ) as answer,
    ):
        raw = b"".join([chunk async for chunk in answer.aiter_raw()])
    assert len(gzip.decompress(raw).splitlines()) == 100


async def test_a_reader_that_stops_reading_is_cut_and_frees_its_slot(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_READS_MAX_EXPORTS="1",
        MDS_DATABASE_POOL_MAX_SIZE="8",
        MDS_SERVER_READ_TIMEOUT="1",
    )
    async with running_service(settings) as svc:
        await put(svc, minute_bars("AAPL", 60_000))
        host, port = svc.base_url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            b"GET /v1/bars?provider=ibkr&resolution=1m HTTP/1.1\r\nHost: x\r\n"
            b"Accept: text/csv\r\n\r\n"
        )
        try:
            assert (await reader.read(64)).startswith(b"HTTP/1.1 200")  # then it reads no more
            reader._transport.pause_reading()  # type: ignore[attr-defined]
            busy = await svc.client.get("/v1/bars", params=query(), headers={"Accept": "text/csv"})
            assert busy.status_code == 503

            async def slot_free() -> bool:
                answer = await svc.client.get(
                    "/v1/bars", params=query(limit="1"), headers={"Accept": "text/csv"}
                )
                return answer.status_code == 200

            await until(slot_free, timeout=15, what="the stalled export cut")
        finally:
            writer.close()


async def test_exports_and_pages_follow_the_key_not_its_text(service: RunningService) -> None:
    # whole and fractional seconds (the text of .25 sorts before that of :00Z), and
    # strikes whose text sorts otherwise than their numbers
    stamps = ["2024-01-02T14:30:00.25Z", "2024-01-02T14:30:00Z", "2024-01-02T14:30:01Z",
              "2024-01-02T14:30:00.75Z"]  # fmt: skip
    quotes = fact_body("quotes", 4, timestamp=lambda i: stamps[i])
    assert (
        await service.client.post("/v1/quotes", params={"wait": "commit"}, json=quotes)
    ).status_code == 201
    ordered = ["2024-01-02T14:30:00Z", "2024-01-02T14:30:00.250000Z",
               "2024-01-02T14:30:00.750000Z", "2024-01-02T14:30:01Z"]  # fmt: skip
    for accept in ("text/csv", "application/x-ndjson"):
        got = await service.client.get(
            "/v1/quotes", params={"provider": "ibkr", "symbol": "AAPL"}, headers={"Accept": accept}
        )
        rows = (
            list(csv.DictReader(io.StringIO(got.text)))
            if accept == "text/csv"
            else [json.loads(line) for line in got.text.splitlines()]
        )
        assert [r["timestamp"] for r in rows] == ordered
        # two, then resumed after the second: the other two
        first = await service.client.get(
            "/v1/quotes",
            params={"provider": "ibkr", "symbol": "AAPL", "limit": "2"},
            headers={"Accept": "text/csv"},
        )
        last = list(csv.DictReader(io.StringIO(first.text)))[-1]
        rest = await service.client.get(
            "/v1/quotes",
            params={
                "provider": "ibkr",
                "symbol": "AAPL",
                "cursor": encode_cursor(["AAPL", last["timestamp"]]),
            },
            headers={"Accept": "text/csv"},
        )
        assert [r["timestamp"] for r in csv.DictReader(io.StringIO(rest.text))] == ordered[2:]
    strikes = ["99.9", "150.5", "1000", "20", "3"]
    options = fact_body("options", 5, ts="2024-01-02T14:30:00Z", strike=lambda i: strikes[i])
    assert (
        await service.client.post("/v1/options", params={"wait": "commit"}, json=options)
    ).status_code == 201
    params = {"provider": "ibkr", "symbol": "AAPL", "limit": "2"}
    seen = await every_page(service, "/v1/options", params, "options")
    assert [o["strike"] for o in seen] == ["3", "20", "99.9", "150.5", "1000"]


async def test_a_cursor_must_name_a_listed_symbol(service: RunningService) -> None:
    cursor = encode_cursor(["ZZZ", "1m", "2024-01-01T00:00:00Z"])
    answer = await service.client.get("/v1/bars", params=query(symbols="AAPL", cursor=cursor))
    assert answer.status_code == 400
    assert "cursor" in answer.text


async def test_a_page_varies_with_accept(service: RunningService) -> None:
    answer = await service.client.get("/v1/bars", params=query(symbol="AAPL"))
    assert answer.headers["vary"] == "Accept"


async def test_a_slow_reader_outlasting_the_command_timeout_gets_everything(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(database_url, str(tmp_path), MDS_DATABASE_COMMAND_TIMEOUT="1")
    async with running_service(settings) as svc:
        await put(svc, minute_bars("AAPL", 60_000))
        host, port = svc.base_url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        writer.write(
            b"GET /v1/bars?provider=ibkr&resolution=1m HTTP/1.1\r\nHost: x\r\n"
            b"Accept: text/csv\r\nConnection: close\r\n\r\n"
        )
        received = 0
        started = asyncio.get_running_loop().time()
        try:
            while chunk := await reader.read(1 << 16):
                received += len(chunk)
                await asyncio.sleep(0.05)  # 1.3 MB/s at most: the COPY waits for seconds
        finally:
            writer.close()
        assert asyncio.get_running_loop().time() - started > 2
        assert received > 60_000 * 70  # every row (each over 70 bytes)
        # the body ended with its last chunk: not cut short
        whole = await svc.client.get("/v1/bars", params=query(), headers={"Accept": "text/csv"})
        assert received > len(whole.content)


async def test_exports_end_when_shutdown_begins(service: RunningService) -> None:
    await put(service, minute_bars("AAPL", 60_000))
    host, port = service.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /v1/bars?provider=ibkr&resolution=1m HTTP/1.1\r\nHost: x\r\nAccept: text/csv\r\n\r\n"
    )
    try:
        assert (await reader.read(64)).startswith(b"HTTP/1.1 200")
        components = service.components
        assert components.reader._exporting == 1
        components.lifecycle.begin_shutdown()
        await until(lambda: components.reader._exporting == 0, what="the export stopped")
        # the client sees its answer end without its last chunk
        rest = b""
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
            rest += chunk
        assert not rest.endswith(b"0\r\n\r\n")
        refused = await service.client.get(
            "/v1/bars", params=query(), headers={"Accept": "text/csv"}
        )
        assert refused.status_code == 503
    finally:
        writer.close()
