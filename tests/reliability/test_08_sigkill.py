"""Scenario 8: SIGKILL mid-run under producers writing through ``StoreClient``.

Issue 17: with its old default (``wait_commit=False``) the client counted a bar as
delivered once the store had queued it (202) in memory; a SIGKILL took the queue
with it and about 10,000 bars were lost without a word. The promise checked here
is the client's: every bar it did not hand back as failed is in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.process import restartable
from tests.support.reliability import (
    PROVIDER,
    SLOW_WRITER,
    ClientProducer,
    FullKey,
    ScenarioReport,
    Values,
    bars_of,
    by_key,
    queue_size,
    seeded,
    stored_keys,
    until_queue_empty,
)

CLIENTS = 3
BARS_PER_CLIENT = 40_000
CAPACITY = 10_000  # the shipped coordinator.capacity: what a kill can take at most
# Each kill comes when the stored rows pass a random point of its window (a share of
# all bars written), and the queue holds DEEP bars or more: always mid-run, whatever
# the machine's pace, with something in memory to lose (the store's credit keeps the
# queue short, a few hundred bars: nothing more is ever in memory).
WINDOWS = ((0.08, 0.2), (0.3, 0.42), (0.52, 0.64))
DEEP = 100
SCENARIO = ScenarioReport(
    8,
    "SIGKILL under client producers",
    f"{CLIENTS} `StoreClient`s with default options write {CLIENTS * BARS_PER_CLIENT:,}"
    " distinct bars to `mds-store serve` with a slow writer (1 worker, batches of 100, fast"
    f" path off); the service is SIGKILLed {len(WINDOWS)} times at random points of the run"
    f" (each when the queue holds {DEEP:,} bars or more) and started again on the same"
    " port each time; the clients carry on and close",
    "every bar a client did not hand back as failed (raised by write/aclose or left in"
    " take_failures) is in PostgreSQL by its key (provider, symbol, resolution, ts) with"
    " its values: 0 lost; nothing stored that was not written; nothing handed back",
)


async def rows_of(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM bars WHERE provider = $1", PROVIDER))


@pytest.mark.timeout(180)
def test_sigkill_under_client_producers(
    database_url: str, tmp_path: Path, report: ScenarioReport
) -> None:
    seed, rng = seeded()
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-8",
        "MDS_COORDINATOR_CAPACITY": str(CAPACITY),
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
        **SLOW_WRITER,
    }
    total = CLIENTS * BARS_PER_CLIENT
    producers = [
        ClientProducer("", bars_of(f"KILL{i}", 0, BARS_PER_CLIENT)) for i in range(CLIENTS)
    ]  # every bar built before the clock starts
    kills: list[dict[str, float | int]] = []

    with restartable(env, tmp_path, tmp_path / "service.log") as service:
        for producer in producers:
            producer.base_url = service.base

        async def scenario() -> tuple[float, float]:
            conn = await asyncpg.connect(database_url)
            started = time.monotonic()
            tasks = [asyncio.create_task(p.run()) for p in producers]
            try:
                async with httpx.AsyncClient(base_url=service.base, timeout=5) as http:
                    for low, high in WINDOWS:
                        point = int(rng.uniform(low, high) * total)
                        while not all(t.done() for t in tasks):
                            if await rows_of(conn) >= point:
                                depth = await queue_size(http)
                                if depth >= DEEP:
                                    break
                            await asyncio.sleep(0.05)
                        else:
                            break  # finished first: the kill count below says so
                        at = time.monotonic()
                        service.kill()
                        stored = await rows_of(conn)
                        ready = await asyncio.to_thread(service.start)
                        kills.append(
                            {
                                "at (s)": round(at - started, 2),
                                "rows stored": stored,
                                "queue": depth,
                                "back ready (s)": round(ready, 2),
                            }
                        )
                    await asyncio.gather(*tasks)
                    closed = time.monotonic() - started
                    # what a queued answer left in the queue is written before counting
                    await until_queue_empty(http)
                    all_in = time.monotonic() - started
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await conn.close()
            return closed, all_in

        closed, all_in = asyncio.run(scenario())
        service.stop()

    written: dict[FullKey, Values] = {}
    handed_back: dict[FullKey, Values] = {}
    delivered: dict[FullKey, Values] = {}
    for p in producers:
        written.update(by_key(p.bars))
        handed_back.update(p.handed_back)
        delivered.update(p.delivered)
    stored = asyncio.run(stored_keys(database_url))
    lost = [k for k in delivered if k not in stored]
    wrong = [k for k in delivered if k in stored and stored[k] != delivered[k]]
    strangers = [k for k in stored if k not in written]
    stats = [p.stats for p in producers if p.stats is not None]
    report.figures.update(
        {
            "seed (MDS_RELIABILITY_SEED)": str(seed),
            "client default wait_commit": producers[0].wait_commit,
            "bars written": len(written),
            "reported delivered": len(delivered),
            "handed back as failed": len(handed_back),
            "kills": len(kills),
            "queue at each kill": [k["queue"] for k in kills],
            "rows stored at each kill": [k["rows stored"] for k in kills],
            "back ready after each kill (s)": [k["back ready (s)"] for k in kills],
            "rows stored": len(stored),
            "lost (delivered, not stored)": len(lost),
            "stored with other values": len(wrong),
            "stored, never written": len(strangers),
            "handed back, stored anyway": len([k for k in handed_back if k in stored]),
            "requests / retries": f"{sum(s.requests for s in stats)}"
            f" / {sum(s.retries for s in stats)}",
            "transport errors": sum(s.transport_errors for s in stats),
            "clients closed after (s)": round(closed, 1),
            "everything stored after (s)": round(all_in, 1),
            "bars/s until everything stored": round(total / all_in),
        }
    )

    assert len(kills) == len(WINDOWS), f"the run ended before kill {len(kills) + 1}"
    assert all(s.unreported_discarded == 0 for s in stats), "failures beyond the client's list"
    assert not lost, (
        f"{len(lost)} bar(s) the clients reported delivered are not in PostgreSQL"
        f" (e.g. {lost[:3]}); queue at the kills: {[k['queue'] for k in kills]}"
    )
    assert not wrong, wrong[:5]
    assert not strangers, strangers[:5]
    # the store came back within seconds, far inside the clients' 300 s deadline
    assert not handed_back, [f for p in producers for f in p.failures][:5]
