"""Scenario 9: SIGKILL under raw HTTP producers posting ``?wait=commit``.

The store's own promise, without the client: an answer 201 to ``POST /v1/bars?wait=commit``
means every bar of that request is committed, so a SIGKILL right after it loses none
of them. (A 202 makes no such promise: queued, or with ``?wait=commit`` still
pending. Requests the kill cut off got no answer: their fate is unknown, and they
are only counted.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx
import pytest

from tests.support.process import restartable
from tests.support.reliability import (
    SLOW_WRITER,
    CommitPoster,
    FullKey,
    ScenarioReport,
    Values,
    queue_size,
    seeded,
    stored_keys,
)

POSTERS = 4
BATCH = 1000
KILLS = 3
SCENARIO = ScenarioReport(
    9,
    "SIGKILL under ?wait=commit",
    f"{POSTERS} raw HTTP producers post {BATCH:,} new bars at a time with ?wait=commit"
    " to `mds-store serve` with a slow writer (1 worker, batches of 100, fast path off);"
    f" SIGKILLed {KILLS} times 1-2.5 s after being ready (random) and started again on the"
    " same port",
    "every bar of every request answered 201 is in PostgreSQL with its values (0 lost),"
    " each 201 saying all its bars committed and none dead-lettered; requests were cut"
    " off by the kills (no answer) and 201s came after every restart",
)


@pytest.mark.timeout(120)
def test_sigkill_under_wait_commit(
    database_url: str, tmp_path: Path, report: ScenarioReport
) -> None:
    seed, rng = seeded()
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-9",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
        **SLOW_WRITER,
    }
    kills: list[float] = []  # monotonic
    depths: list[int] = []
    ready_after: list[float] = []

    with restartable(env, tmp_path, tmp_path / "service.log") as service:

        async def scenario() -> list[CommitPoster]:
            halt = asyncio.Event()
            limits = httpx.Limits(max_connections=POSTERS + 1)
            async with (
                httpx.AsyncClient(base_url=service.base, limits=limits) as client,
                httpx.AsyncClient(base_url=service.base, timeout=5) as probe,
            ):
                posters = [CommitPoster(client, f"WAIT{i}", batch=BATCH) for i in range(POSTERS)]
                tasks = [asyncio.create_task(p.run(halt)) for p in posters]
                try:
                    for _ in range(KILLS):
                        await asyncio.sleep(rng.uniform(1.0, 2.5))
                        assert not any(t.done() for t in tasks), [p.errors for p in posters]
                        depths.append(await queue_size(probe))
                        kills.append(time.monotonic())
                        service.kill()
                        ready_after.append(await asyncio.to_thread(service.start))
                    await asyncio.sleep(1.5)  # 201s after the last restart too
                    halt.set()
                    await asyncio.gather(*tasks)
                finally:
                    halt.set()
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            return posters

        posters = asyncio.run(scenario())
        service.stop()

    committed: dict[FullKey, Values] = {}
    unknown: dict[FullKey, Values] = {}
    for p in posters:
        committed.update(p.committed)
        unknown.update(p.unknown)
    stored = asyncio.run(stored_keys(database_url))
    missing = [k for k in committed if k not in stored]
    wrong = [k for k in committed if k in stored and stored[k] != committed[k]]
    strangers = [k for k in stored if k not in committed and k not in unknown]
    # 201s between kill i and kill i+1 (the last: after the last restart)
    bounds = [0.0, *kills, float("inf")]
    per_run = [
        sum(1 for p in posters for t in p.answers_201 if lo <= t < hi)
        for lo, hi in itertools.pairwise(bounds)
    ]
    statuses = {s: sum(p.statuses[s] for p in posters) for s in (201, 202, 503)}
    report.figures.update(
        {
            "seed (MDS_RELIABILITY_SEED)": str(seed),
            "kills": len(kills),
            "queue at each kill": depths,
            "back ready after each kill (s)": [round(r, 2) for r in ready_after],
            "answers 201 / 202 / 503": " / ".join(str(statuses[s]) for s in (201, 202, 503)),
            "answers 201 between kills": per_run,
            "requests cut off by a kill (no answer)": sum(p.no_answer for p in posters),
            "connections refused while down": sum(p.refused for p in posters),
            "bars answered 201": len(committed),
            "of them stored": len(committed) - len(missing),
            "lost (answered 201, not stored)": len(missing),
            "bars without a 201 (cut off or pending)": len(unknown),
            "of them stored anyway": len([k for k in unknown if k in stored]),
            "rows stored": len(stored),
        }
    )

    assert len(kills) == KILLS
    assert not [e for p in posters for e in p.errors], [e for p in posters for e in p.errors]
    assert not missing, (
        f"{len(missing)} bar(s) of requests answered 201 are not in PostgreSQL (e.g. {missing[:3]})"
    )
    assert not wrong, wrong[:5]
    assert not strangers, strangers[:5]
    assert not [s for p in posters for s in p.short], [s for p in posters for s in p.short][:3]
    assert sum(p.no_answer for p in posters) >= 1, "no request was in flight at any kill"
    assert all(n > 0 for n in per_run), f"201s between kills: {per_run}"
