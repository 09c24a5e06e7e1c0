"""``POST /admin/retention/apply`` on the live service: the admin token, the answer,
409 while another apply runs, 503 while the database is away, and
``mds_retention_rows_deleted_total{table}`` on ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

TOKEN = "retention-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APPLY = "/admin/retention/apply"
TABLES = ("bars", "options", "quotes", "trades", "fundamentals", "news")


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=TOKEN,
        MDS_RETENTION_BARS="30d",
        MDS_RETENTION_FUNDAMENTALS="3650d",
        MDS_RETENTION_BATCH_ROWS="2",
    )
    async with running_service(settings) as svc:
        yield svc


async def seed(database_url: str) -> None:
    """Bars 40 days old of two tenants and a recent one; fundamentals of 2000 and now;
    a quote of 2000 (quotes have no retention here)."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO bars (tenant_id, provider, symbol, resolution, ts, open, high, low, "
            "close, volume) VALUES ($1, 'p', 'AAPL', '1m', $2, 1, 1, 1, 1, 1)",
            [("alpha", now - timedelta(days=40, minutes=i)) for i in range(3)]
            + [("beta", now - timedelta(days=40, minutes=i)) for i in range(2)]
            + [("alpha", now - timedelta(days=1))],
        )
        await conn.executemany(
            "INSERT INTO fundamentals (provider, symbol, asof) VALUES ('p', 'AAPL', $1)",
            [(date(2000, 3, 31),), (now.date(),)],
        )
        await conn.execute(
            "INSERT INTO quotes (provider, symbol, \"timestamp\") VALUES ('p', 'AAPL', $1)",
            datetime(2000, 1, 3, tzinfo=UTC),
        )
    finally:
        await conn.close()


async def deleted(service: RunningService) -> dict[str, float]:
    """``mds_retention_rows_deleted_total`` by table, as ``/metrics`` shows it."""
    text = (await service.client.get("/metrics")).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name.startswith("mds_ret")]
    assert family.name == "mds_retention_rows_deleted"  # the parser drops "_total"
    return {
        s.labels["table"]: s.value
        for s in family.samples
        if s.name == "mds_retention_rows_deleted_total"
    }


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_apply_requires_the_admin_token(
    service: RunningService, database_url: str, headers: dict[str, str]
) -> None:
    await seed(database_url)
    response = await service.client.post(APPLY, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM bars") == 6  # nothing deleted
    finally:
        await conn.close()


async def test_apply_deletes_what_is_too_old_and_counts_it(
    service: RunningService, database_url: str
) -> None:
    assert await deleted(service) == dict.fromkeys(TABLES, 0)  # from start-up
    await seed(database_url)

    response = await service.client.post(APPLY, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    bars, fundamentals = body["tables"]
    assert body["complete"] is True
    assert {k: bars[k] for k in ("table", "keep", "deleted", "complete")} == {
        "table": "bars", "keep": "30d", "deleted": 5, "complete": True,
    }  # fmt: skip
    cutoff = datetime.fromisoformat(bars["cutoff"])
    assert bars["cutoff"].endswith("Z")
    assert timedelta(days=29) < datetime.now(UTC) - cutoff < timedelta(days=31)
    assert fundamentals["deleted"] == 1
    assert fundamentals["cutoff"].endswith("T00:00:00Z")

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM bars") == 1
        assert await conn.fetchval("SELECT count(*) FROM fundamentals") == 1
        assert await conn.fetchval("SELECT count(*) FROM quotes") == 1
    finally:
        await conn.close()
    assert await deleted(service) == {**dict.fromkeys(TABLES, 0), "bars": 5, "fundamentals": 1}

    again = await service.client.post(APPLY, headers=AUTH)
    assert [t["deleted"] for t in again.json()["tables"]] == [0, 0]
    assert (await deleted(service))["bars"] == 5


async def test_without_retention_the_answer_is_empty(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(database_url, str(tmp_path), ADMIN_TOKEN=TOKEN)
    async with running_service(settings) as svc:
        response = await svc.client.post(APPLY, headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"tables": [], "complete": True}


async def test_a_second_apply_while_one_runs_is_409(
    service: RunningService, database_url: str
) -> None:
    await seed(database_url)
    blocker = await asyncpg.connect(database_url)
    try:
        held = blocker.transaction()
        await held.start()
        await blocker.execute("LOCK TABLE fundamentals IN SHARE MODE")  # the first one waits
        first = asyncio.create_task(service.client.post(APPLY, headers=AUTH))

        async def waiting() -> bool:
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted "
                    "AND relation = 'fundamentals'::regclass"
                )
            )

        await until(waiting, what="the first apply waits for fundamentals")
        second = await service.client.post(APPLY, headers=AUTH)
        assert second.status_code == 409
        assert second.headers["content-type"] == "application/problem+json"
        problem = second.json()
        assert problem["status"] == 409
        assert problem["instance"] == APPLY
        assert "already running" in problem["detail"]
        await held.commit()
        assert (await asyncio.wait_for(first, 20)).status_code == 200
    finally:
        await blocker.close()


async def test_apply_is_503_while_the_database_is_away(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = service_settings(
        proxy.url_for(database_url), str(tmp_path), ADMIN_TOKEN=TOKEN, MDS_RETENTION_BARS="30d"
    )
    async with running_service(settings) as svc:
        assert (await svc.client.post(APPLY, headers=AUTH)).status_code == 200
        proxy.cut()
        response = await svc.client.post(APPLY, headers=AUTH)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert response.json()["retry_after"] == 5
        proxy.restore()

        async def applied() -> bool:
            try:
                return (await svc.client.post(APPLY, headers=AUTH)).status_code == 200
            except httpx.HTTPError:
                return False

        await until(applied, what="an apply once the database is back")


async def test_the_document_lists_exactly_what_the_route_answers(service: RunningService) -> None:
    document = (await service.client.get("/schema/openapi.json")).json()
    operation = document["paths"][APPLY]["post"]
    assert set(operation["responses"]) == {"200", "401", "409", "503"}
    assert operation["security"] == [{"BearerToken": []}]
    assert "requestBody" not in operation
    for status in ("401", "409", "503"):
        content = operation["responses"][status]["content"]
        assert list(content) == ["application/problem+json"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RetentionBody"}
