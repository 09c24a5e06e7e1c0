"""Scenario 7: a minute of mixed traffic, watched for errors, latency and memory."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.process import serve, stop
from tests.support.reliability import (
    PROVIDER,
    ProbeSampler,
    Producer,
    ScenarioReport,
    accepted_of,
    diff,
    ms,
    percentile,
    rss_mb,
    statuses_of,
    stored_values,
)

SOAK = 60.0
STREAMS = 200
WARM_UP = 10.0  # RSS growth is measured from here (pools, caches and buffers filled)
RSS_GROWTH_MB = 40.0
WINDOW = 20  # seconds: probe p99 is held in each of these, not just on average
SCENARIO = ScenarioReport(
    7,
    "Soak",
    f"{SOAK:.0f} s of mixed traffic: 3 ingest clients (2 queued, 1 ?wait=commit), reads,"
    f" {STREAMS} SSE streams, /healthz and /readyz every 100 ms",
    "no error answer to any well-formed request; probe p99 < 50 ms overall and in each"
    f" {WINDOW} s of it; server RSS growth after a {WARM_UP:.0f} s warm-up"
    f" < {RSS_GROWTH_MB:.0f} MiB; every stream open to the end; every accepted bar stored"
    " with its values",
)


async def open_raw_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def drain(reader: asyncio.StreamReader, stop: asyncio.Event) -> int:
    """Read the stream until told to stop; the bytes read (EOFError if it ended early)."""
    total = 0
    while not stop.is_set():
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 0.5)
        except TimeoutError:
            continue
        if not chunk:
            raise EOFError("stream ended during the soak")
        total += len(chunk)
    return total


async def reader_loop(
    client: httpx.AsyncClient, stop: asyncio.Event, statuses: Counter[int]
) -> None:
    while not stop.is_set():
        response = await client.get(
            "/v1/bars",
            params={"provider": PROVIDER, "symbol": "SOAK0", "resolution": "1m", "limit": 500},
        )
        statuses[response.status_code] += 1
        await asyncio.sleep(0.5)


@pytest.mark.timeout(180)
def test_soak(database_url: str, tmp_path: Path, report: ScenarioReport) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-7",
        "MDS_DATABASE_HEALTH_INTERVAL": "0.5",
        "MDS_DATABASE_HEALTH_TIMEOUT": "0.5",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
        "MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "5",
    }
    with serve(env, tmp_path) as (proc, base):
        port = int(base.rsplit(":", 1)[1])

        async def scenario() -> tuple[
            list[Producer], list[ProbeSampler], list[tuple[float, float]], Counter[int], list[int]
        ]:
            halt = asyncio.Event()
            rss: list[tuple[float, float]] = []
            reads: Counter[int] = Counter()
            probes = [ProbeSampler(base, path, interval=0.1) for path in ("/healthz", "/readyz")]
            streams = await asyncio.gather(*(open_raw_stream(port) for _ in range(STREAMS)))
            readers = [asyncio.create_task(drain(r, halt)) for r, _ in streams]
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                producers = [
                    Producer(client, "SOAK0", batch=200, pace=0.2),
                    Producer(client, "SOAK1", batch=500, pace=0.5),
                    Producer(client, "SOAK2", batch=100, pace=0.3, wait_commit=True),
                ]
                tasks = [asyncio.create_task(p.run(halt)) for p in producers]
                tasks += [asyncio.create_task(p.run(halt)) for p in probes]
                tasks.append(asyncio.create_task(reader_loop(client, halt, reads)))
                started = time.monotonic()
                while time.monotonic() - started < SOAK:
                    rss.append((time.monotonic() - started, rss_mb(proc.pid)))
                    await asyncio.sleep(1)
                halt.set()
                await asyncio.gather(*tasks)
            read_bytes = await asyncio.gather(*readers)
            for _, writer in streams:
                writer.close()
                await writer.wait_closed()
            return producers, probes, rss, reads, read_bytes

        producers, probes, rss, reads, read_bytes = asyncio.run(scenario())
        output = stop(proc)

    accepted = accepted_of(producers)
    stored = asyncio.run(stored_values(database_url))
    statuses = statuses_of(producers)
    latencies = probes[0].latencies() + probes[1].latencies()
    first = min(p.sent for s in probes for p in s.probes)
    windows = [
        percentile(
            [p.latency for s in probes for p in s.probes if w <= p.sent - first < w + WINDOW], 0.99
        )
        for w in range(0, int(SOAK), WINDOW)
    ]
    warm = [mb for t, mb in rss if t >= WARM_UP]
    growth = warm[-1] - warm[0]
    report.figures.update(
        {
            "bars accepted": len(accepted),
            "bars stored": len(stored),
            "ingest answers": dict(sorted((str(k), v) for k, v in statuses.items())),
            "read answers": dict(sorted((str(k), v) for k, v in reads.items())),
            "probes": len(latencies),
            "probe p50 (ms)": ms(percentile(latencies, 0.5)),
            "probe p99 (ms)": ms(percentile(latencies, 0.99)),
            "probe max (ms)": ms(max(latencies)),
            f"probe p99 per {WINDOW} s (ms)": [ms(w) for w in windows],
            "RSS at start / after warm-up / end (MiB)": (
                f"{rss[0][1]:.0f} / {warm[0]:.0f} / {warm[-1]:.0f}"
            ),
            "RSS peak (MiB)": round(max(mb for _, mb in rss), 1),
            "RSS growth after warm-up (MiB)": round(growth, 1),
            "streams open to the end": len(read_bytes),
        }
    )

    assert not [e for p in producers for e in p.errors], [e for p in producers for e in p.errors]
    assert set(statuses) <= {201, 202}, statuses
    assert set(reads) == {200}, reads
    assert all(p.status == 200 for s in probes for p in s.probes)
    assert percentile(latencies, 0.99) < 0.05
    assert max(windows) < 0.05, [ms(w) for w in windows]  # throughout, not on average
    assert growth < RSS_GROWTH_MB, rss
    assert len(read_bytes) == STREAMS
    assert accepted == stored, diff(accepted, stored)
    assert "Traceback" not in output, output[-3000:]
