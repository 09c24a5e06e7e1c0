"""Restore: POST /v1/bars with ``Content-Type: text/csv`` over real HTTP into a real
PostgreSQL. The export's text is made here by PostgreSQL itself (``COPY (SELECT ...)
TO STDOUT WITH CSV HEADER``, the export's columns and formats), restored into another
database, and compared; restoring is idempotent, and a row never overwrites a stored
version updated later."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from market_data_store.ingest import CSV_COLUMNS
from tests.support.postgres import DatabaseFactory, stored_bars
from tests.support.service import RunningService, running_service, service_settings

HEADER = ",".join(CSV_COLUMNS)
# The export's formats: ts and updated_at RFC 3339 UTC (a fraction only when there is
# one), prices as PostgreSQL prints the numeric, delayed true/false.
EXPORT = """
  SELECT provider, symbol, resolution,
         to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN extract(microseconds FROM ts)::bigint % 1000000 = 0 THEN ''
                   ELSE to_char(ts AT TIME ZONE 'UTC', '.US') END || 'Z' AS ts,
         open, high, low, close, volume,
         CASE WHEN delayed THEN 'true' ELSE 'false' END AS delayed,
         to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at
  FROM bars ORDER BY provider, symbol, resolution, ts
"""
KEEP = ("tenant_id", "provider", "symbol", "resolution", "ts", "open", "high", "low", "close",
        "volume", "delayed", "updated_at")  # fmt: skip


async def export_text(url: str) -> str:
    conn = await asyncpg.connect(url)
    out = io.BytesIO()

    async def write(data: bytes) -> None:
        out.write(data)

    try:
        await conn.copy_from_query(EXPORT, output=write, format="csv", header=True)
    finally:
        await conn.close()
    return out.getvalue().decode()


def kept(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return [tuple(record[name] for name in KEEP) for record in records]


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN="admin-token-for-tests",
        MDS_INGEST_MAX_BARS_PER_REQUEST="500",
        MDS_INGEST_MAX_BODY_BYTES="200000",
    )
    async with running_service(settings) as svc:
        yield svc


async def restore(
    client: httpx.AsyncClient, text: str, *, wait: bool = True, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/bars",
        content=text.encode(),
        params={"wait": "commit"} if wait else {},
        headers={"content-type": "text/csv", **headers},
    )


def json_bars(n: int, *, close: str = "187.02", symbol: str = "aapl") -> dict[str, Any]:
    return {
        "provider": "ibkr",
        "bars": [
            {"symbol": symbol, "ts": f"2024-01-02T14:{i:02d}:00.{i:06d}Z", "open": "187.15",
             "high": "187.40", "low": "186.90", "close": close, "volume": str(1000 + i),
             "resolution": "1m", "delayed": i % 2 == 0}
            for i in range(n)
        ],
    }  # fmt: skip


async def test_an_export_restores_into_another_store_exactly(
    service: RunningService, database_url: str, db_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Bars ingested as JSON, exported by PostgreSQL, restored into a second store:
    the same rows, updated_at included; the export of the copy is the same text."""
    response = await service.client.post("/v1/bars?wait=commit", json=json_bars(40))
    assert response.status_code == 201
    await service.client.post("/v1/bars?wait=commit", json=json_bars(5, close="187.03"))
    text = await export_text(database_url)
    assert text.startswith(HEADER + "\n")
    assert ",187.03," in text
    assert ".000003Z," in text  # a fraction of ts
    other = await db_factory.create()
    try:
        settings = service_settings(other, str(tmp_path / "other"))
        async with running_service(settings) as copy:
            answer = await restore(copy.client, text)
            assert answer.status_code == 201, answer.text
            assert answer.json()["committed"] == answer.json()["accepted"] == 40
            assert kept(await stored_bars(other)) == kept(await stored_bars(database_url))
            assert await export_text(other) == text
    finally:
        await db_factory.drop(other)


async def test_restoring_twice_changes_nothing(service: RunningService, database_url: str) -> None:
    await service.client.post("/v1/bars?wait=commit", json=json_bars(30))
    text = await export_text(database_url)
    before = await stored_bars(database_url)
    for _ in range(2):
        answer = await restore(service.client, text)
        assert answer.status_code == 201, answer.text
        assert answer.json()["dead_lettered"] == 0
    assert [dict(r) for r in await stored_bars(database_url)] == [dict(r) for r in before]


async def test_a_stale_row_does_not_overwrite_a_later_correction(
    service: RunningService, database_url: str
) -> None:
    await service.client.post("/v1/bars?wait=commit", json=json_bars(3))
    backup = await export_text(database_url)
    correction = await service.client.post(
        "/v1/bars?wait=commit", json=json_bars(3, close="187.39")
    )
    assert correction.status_code == 201
    corrected = await stored_bars(database_url)
    assert {r["close"] for r in corrected} == {Decimal("187.39")}
    # the backup predates the correction: restoring it changes nothing
    assert (await restore(service.client, backup)).status_code == 201
    assert kept(await stored_bars(database_url)) == kept(corrected)
    # a version updated after the correction does overwrite it
    header, first = backup.replace(",187.02,", ",187.10,").splitlines()[:2]
    later = corrected[0]["updated_at"] + timedelta(microseconds=1)  # and not after now
    newer = f"{first.rsplit(',', 1)[0]},{later.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
    answer = await restore(service.client, f"{header}\n{newer}\n")
    assert answer.status_code == 201, answer.text
    rows = await stored_bars(database_url)
    assert [str(r["close"]) for r in rows] == ["187.10", "187.39", "187.39"]
    assert rows[0]["updated_at"] == later


async def test_rows_without_updated_at_are_accepted_now_and_202_without_wait(
    service: RunningService, database_url: str
) -> None:
    text = (
        "provider,symbol,resolution,ts,open,high,low,close,volume\r\n"
        "ibkr,aapl,1m,2024-01-02T14:30:00+01:00,1,2,0.5,1.5,10\r\n\r\n"
    )
    answer = await restore(service.client, text, wait=False)
    assert answer.status_code == 202
    assert answer.json()["accepted"] == 1
    await service.components.coordinator.wait_idle()
    (row,) = await stored_bars(database_url)
    assert (row["symbol"], row["delayed"], row["ts"].hour) == ("AAPL", False, 13)
    assert row["updated_at"] == row["ingested_at"]


async def test_a_tenants_restore_is_its_own(database_url: str, tmp_path: Path) -> None:
    tenants = {"desk-a": "token-of-desk-a-0123456789", "desk-b": "token-of-desk-b-0123456789"}
    settings = service_settings(database_url, str(tmp_path), MDS_AUTH_TENANTS=json.dumps(tenants))
    text = f"{HEADER}\nibkr,AAPL,1m,2024-01-02T00:00:00Z,1,1,1,1,1,false,2025-01-01T00:00:00Z\n"
    async with running_service(settings) as svc:
        assert (await restore(svc.client, text)).status_code == 401
        token = f"Bearer {tenants['desk-b']}"
        assert (await restore(svc.client, text, authorization=token)).status_code == 201
    (row,) = await stored_bars(database_url)
    assert row["tenant_id"] == "desk-b"


async def test_refusals_are_problems(service: RunningService, database_url: str) -> None:
    bad = (
        "provider,symbol,resolution,ts,open,high,low,close,volume,updated_at\n"
        "ibkr,AAPL,1m,2024-01-02T00:00:00Z,1,2,0.5,1.5,10,2999-01-01T00:00:00Z\n"
        "ibkr,AAPL,1m,2024-01-02T00:00:00Z,1,0,0.5,1.5,10\n"
    )
    answer = await restore(service.client, bad)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["detail"] == "2 invalid field(s); nothing was stored"
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(0, "updated_at"), (1, "$")]
    header = await restore(service.client, "provider,symbol,timeframe\nibkr,AAPL,1m\n")
    assert header.status_code == 422
    fields = {e["field"]: e for e in header.json()["errors"]}
    assert fields["timeframe"]["index"] is None
    assert "unknown column" in fields["timeframe"]["message"]
    assert "required column" in fields["volume"]["message"]
    row = "ibkr,AAPL,1m,2024-01-02T00:00:{:02d}Z,1,1,1,1,1"
    many = "\n".join(
        [HEADER[: HEADER.index(",delayed")], *(row.format(i % 60) for i in range(501))]
    )
    too_many = await restore(service.client, many)
    assert too_many.status_code == 413
    assert "at most 500" in too_many.json()["detail"]
    for content_type in ("text/csv; charset=latin-1", "text/plain", "application/csv"):
        refused = await service.client.post(
            "/v1/bars", content=b"x", headers={"content-type": content_type}
        )
        assert refused.status_code == 415, content_type
        assert "text/csv" in refused.json()["detail"]
    utf8 = await service.client.post(
        "/v1/bars",
        content=f"{HEADER}\nibkr,AAPL,1m,2024-01-02T00:00:00Z,1,1,1,1,1,true,2025-01-01T00:00:00Z",
        headers={"content-type": "Text/CSV; charset=UTF-8"},
    )
    assert utf8.status_code == 202, utf8.text
    latin = await service.client.post(
        "/v1/bars", content=b"provider\n\xff", headers={"content-type": "text/csv"}
    )
    assert latin.status_code == 400
    assert "UTF-8" in latin.json()["detail"]
    await service.components.coordinator.wait_idle()
    assert len(await stored_bars(database_url)) == 1


async def test_the_facts_routes_do_not_take_csv(service: RunningService) -> None:
    refused = await service.client.post(
        "/v1/quotes", content=b"x", headers={"content-type": "text/csv"}
    )
    assert refused.status_code == 415


async def test_the_document_lists_text_csv(service: RunningService) -> None:
    document = (await service.client.get("/schema/openapi.json")).json()
    content = document["paths"]["/v1/bars"]["post"]["requestBody"]["content"]
    assert content["text/csv"]["schema"]["type"] == "string"
    example = content["text/csv"]["schema"]["example"]
    answer = await restore(service.client, example)
    assert answer.status_code == 201, answer.text
    assert content["application/json"]["schema"]["properties"]["bars"]["maxItems"] == 500
