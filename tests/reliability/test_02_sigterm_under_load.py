"""Scenario 2: SIGTERM with a deep queue, 200 open streams and ingest in flight."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.process import serve
from tests.support.reliability import (
    Key,
    ProbeSampler,
    Producer,
    ScenarioReport,
    Values,
    accepted_of,
    dead_lettered,
    queue_size,
    stored_values,
)

SCENARIO = ScenarioReport(
    2,
    "SIGTERM under load",
    "SIGTERM to `mds-store serve` with a deep queue (every INSERT statement slowed by a"
    " 50 ms trigger, 1 writer), 200 open SSE streams and 2 ingest clients posting",
    "readiness 503 (or no longer accepting connections) from the signal, never 200 after;"
    " exit 0 by itself within graceful + drain timeout; every accepted bar committed or"
    " dead-lettered with its error, none vanished; every stream ended with the final chunk",
)
STREAMS = 200
GRACEFUL = 5.0
DRAIN = 3.0
DEEP = 8000  # queued bars at the signal, at least

SLOW = """
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
CREATE TRIGGER slow_insert BEFORE INSERT ON bars
    FOR EACH STATEMENT EXECUTE FUNCTION slow_insert();
"""


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def open_raw_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


@pytest.mark.timeout(150)
def test_sigterm_under_load(database_url: str, tmp_path: Path, report: ScenarioReport) -> None:
    dlq_file = tmp_path / "dlq.ndjson"
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-2",
        "MDS_SERVER_GRACEFUL_TIMEOUT": str(GRACEFUL),
        "MDS_COORDINATOR_WORKERS": "1",
        "MDS_COORDINATOR_BATCH_SIZE": "100",
        "MDS_COORDINATOR_CAPACITY": "50000",
        "MDS_COORDINATOR_FLUSH_INTERVAL": "0.02",
        "MDS_COORDINATOR_DRAIN_TIMEOUT": str(DRAIN),
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(dlq_file),
        "MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "60",
    }
    with serve(env, tmp_path) as (proc, base):
        asyncio.run(execute(database_url, SLOW))
        port = int(base.rsplit(":", 1)[1])

        async def scenario() -> tuple[list[Producer], ProbeSampler, list[bytes], int, float]:
            halt, halt_probes = asyncio.Event(), asyncio.Event()
            probes = ProbeSampler(base, "/readyz", interval=0.01, timeout=1)
            streams = await asyncio.gather(*(open_raw_stream(port) for _ in range(STREAMS)))
            tails = [asyncio.create_task(asyncio.wait_for(r.read(), 30)) for r, _ in streams]
            async with httpx.AsyncClient(base_url=base) as client:
                producers = [Producer(client, f"TERM{i}", batch=500) for i in (0, 1)]
                tasks = [asyncio.create_task(p.run(halt)) for p in producers]
                sampler = asyncio.create_task(probes.run(halt_probes))
                depth = 0

                def deep() -> bool:
                    return depth >= DEEP

                while not deep():
                    depth = await queue_size(client)
                    await asyncio.sleep(0.1)
                    assert not any(t.done() for t in tasks), [p.errors for p in producers]
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                bodies = await asyncio.gather(*tails)
                ends.append(time.monotonic())
                halt.set()
                await asyncio.gather(*tasks)
                await asyncio.to_thread(proc.wait, 60)
                ends.append(time.monotonic())
                halt_probes.set()
                await sampler
            for _, writer in streams:
                writer.close()
                await writer.wait_closed()
            return producers, probes, bodies, depth, signalled

        ends: list[float] = []
        producers, probes, bodies, depth, signalled = asyncio.run(scenario())
        streams_ended, exited = (t - signalled for t in ends)
        output = proc.communicate(timeout=10)[0]

    accepted = accepted_of(producers)
    unknown: dict[Key, Values] = {}
    for p in producers:
        unknown.update(p.unknown)
    stored = asyncio.run(stored_values(database_url))
    dead = dead_lettered(dlq_file)
    dead_keys = {key: values for _, key, values in dead}
    vanished = [k for k in accepted if k not in stored and k not in dead_keys]
    wrong = [k for k in accepted if stored.get(k, dead_keys.get(k)) != accepted[k]]
    strangers = [k for k in {**stored, **dead_keys} if k not in accepted and k not in unknown]
    # a probe sent before the signal may be answered after it: look from 20 ms on
    after_signal = [p for p in probes.probes if p.sent >= signalled + 0.02]
    first_503 = next((p for p in after_signal if p.status == 503), None)
    report.figures.update(
        {
            "queue depth at SIGTERM": depth,
            "bars accepted": len(accepted),
            "committed": len([k for k in accepted if k in stored]),
            "dead-lettered": len(dead),
            "both committed and dead-lettered": len([k for k in dead_keys if k in stored]),
            "vanished": len(vanished),
            "drain bound (s)": GRACEFUL + DRAIN,
            "exit after SIGTERM (s)": round(exited, 2),
            "streams ended after SIGTERM (s)": round(streams_ended, 2),
            "streams ended cleanly": sum(b.endswith(b"0\r\n\r\n") for b in bodies),
            "readiness answers after the signal": sorted(
                {str(p.status or "refused") for p in after_signal}
            ),
            "first readiness 503 after SIGTERM (s)": round(first_503.sent - signalled, 3)
            if first_503
            else None,
        }
    )

    assert proc.returncode == 0, output[-3000:]
    assert exited < GRACEFUL + DRAIN + 2, f"exited {exited:.1f} s after SIGTERM"
    assert depth >= DEEP
    assert not vanished, f"{len(vanished)} accepted bar(s) neither committed nor dead-lettered"
    assert not wrong, wrong[:5]
    assert not strangers, strangers[:5]
    assert dead, "the drain bound was not reached: the queue was not deep enough"
    assert {e for e, _, _ in dead} == {"coordinator stopped before these items were written"}
    assert sum(b.endswith(b"0\r\n\r\n") for b in bodies) == STREAMS
    assert all(b"event: feedback" in b for b in bodies)
    assert f"{STREAMS} stream(s) ended for shutdown" in output
    # readiness: 503 from the signal until the listener closes (refused, which a
    # kubelet counts as not ready too), never 200 again
    assert after_signal, "no probe after the signal"
    assert {p.status for p in after_signal} <= {503, 0}, after_signal[:5]
    for p in producers:  # only transport failures at the very end, when the server left
        assert all("503" not in e for e in p.errors)
