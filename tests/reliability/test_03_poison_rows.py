"""Scenario 3: rows that pass HTTP validation but fail in the database."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.process import serve, stop
from tests.support.reliability import (
    PROVIDER,
    Key,
    ScenarioReport,
    Values,
    bars_of,
    dead_lettered,
    diff,
    stored_values,
)

SCENARIO = ScenarioReport(
    3,
    "Poison rows",
    "a test-only trigger on `bars` rejecting symbols 'POISON%' (check_violation) in 20"
    " batches of 250 bars; replay while it is there; then the trigger dropped and replay",
    "only the poison rows reach the dead-letter queue, each with the trigger's error; every"
    " other row of their batches lands with its values; replay while the cause is there"
    " leaves each poison row in the file once; replay after removing it lands them all and"
    " empties the file",
)
TOKEN = "reliability-admin"
REQUESTS = 20
PER_REQUEST = 250
POISON_AT = (0, 7, 8, 9, 100, 201, 249)  # indexes in each request: single ones and a run

TRIGGER = """
CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.symbol LIKE 'POISON%' THEN
        RAISE EXCEPTION 'poison row % rejected by test trigger', NEW.symbol
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reject_poison BEFORE INSERT OR UPDATE ON bars
    FOR EACH ROW EXECUTE FUNCTION reject_poison();
"""
DROP = "DROP TRIGGER reject_poison ON bars; DROP FUNCTION reject_poison();"


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def request_bars(r: int) -> list[dict[str, str]]:
    bars = bars_of(f"GOOD{r}", r * PER_REQUEST, PER_REQUEST)
    for i in POISON_AT:
        bars[i]["symbol"] = f"POISON{r}"
    return bars


def as_key(bar: dict[str, str]) -> Key:
    return (bar["symbol"], datetime.fromisoformat(bar["ts"]))


def as_values(bar: dict[str, str]) -> Values:
    return (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])


@pytest.mark.timeout(150)
def test_poison_rows_are_isolated_and_replayed(
    database_url: str, tmp_path: Path, report: ScenarioReport
) -> None:
    dlq_file = tmp_path / "dlq.ndjson"
    env = {
        "DATABASE_URL": database_url,
        "MDS_ADMIN_TOKEN": TOKEN,
        "MDS_SERVER_INSTANCE_ID": "rel-3",
        "MDS_COORDINATOR_WORKERS": "2",
        "MDS_COORDINATOR_BATCH_SIZE": "500",  # a batch spans two requests
        "MDS_COORDINATOR_FLUSH_INTERVAL": "0.05",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(dlq_file),
    }
    admin = {"authorization": f"Bearer {TOKEN}"}
    with serve(env, tmp_path) as (proc, base):
        asyncio.run(execute(database_url, TRIGGER))
        good: dict[Key, Values] = {}
        poison: dict[Key, Values] = {}
        answers = []

        async def ingest() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:

                async def one(r: int) -> None:
                    bars = request_bars(r)
                    response = await client.post(
                        "/v1/bars?wait=commit", json={"provider": PROVIDER, "bars": bars}
                    )
                    answers.append(response)
                    for bar in bars:
                        target = poison if bar["symbol"].startswith("POISON") else good
                        target[as_key(bar)] = as_values(bar)

                await asyncio.gather(*(one(r) for r in range(REQUESTS)))

        asyncio.run(ingest())
        stored_first = asyncio.run(stored_values(database_url))
        first = dead_lettered(dlq_file)
        summary = httpx.get(f"{base}/admin/dlq", params={"recent": 0}, headers=admin).json()

        still = httpx.post(f"{base}/admin/dlq/replay", headers=admin, timeout=60)
        after_failed_replay = dead_lettered(dlq_file)

        asyncio.run(execute(database_url, DROP))
        replay = httpx.post(f"{base}/admin/dlq/replay", headers=admin, timeout=60)
        after_replay = httpx.get(f"{base}/admin/dlq", params={"recent": 0}, headers=admin).json()
        stop(proc)
    stored_last = asyncio.run(stored_values(database_url))

    poison_count = REQUESTS * len(POISON_AT)
    report.figures.update(
        {
            "bars accepted": len(good) + len(poison),
            "poison bars": len(poison),
            "good bars stored": len(stored_first),
            "dead-lettered items": len(first),
            "items in file after replay with the cause still there": len(after_failed_replay),
            "replayed items written": replay.json().get("written") if replay.is_success else None,
            "bars stored at the end": len(stored_last),
            "records in file at the end": after_replay.get("records"),
        }
    )

    assert [a.status_code for a in answers] == [201] * REQUESTS, [a.text for a in answers]
    for answer in answers:
        body = answer.json()
        assert (body["committed"], body["dead_lettered"]) == (
            PER_REQUEST - len(POISON_AT),
            len(POISON_AT),
        ), body
        assert body["dead_lettered_indices"] == list(POISON_AT), body
    assert len(poison) == poison_count
    # only the poison rows, each once, each with the trigger's error
    assert sorted(key for _, key, _ in first) == sorted(poison)
    assert all("rejected by test trigger" in e for e, _, _ in first), {e for e, _, _ in first}
    assert all(poison[key] == values for _, key, values in first)
    assert summary["items"] == poison_count
    assert stored_first == good, diff(good, stored_first)

    assert still.status_code == 200, still.text
    assert still.json()["written"] == 0
    assert sorted(key for _, key, _ in after_failed_replay) == sorted(poison), (
        "replay with the cause still there must leave each poison row in the file once"
    )

    assert replay.status_code == 200, replay.text
    assert replay.json()["written"] == poison_count, replay.json()
    assert (after_replay["records"], after_replay["items"]) == (0, 0)
    assert dead_lettered(dlq_file) == []
    assert stored_last == {**good, **poison}, diff({**good, **poison}, stored_last)
