"""Tenants (issue 20): a bearer token names the tenant; a tenant writes and reads only its
own bars, isolated by PostgreSQL row-level security for reads; one tenant cannot fill
the write queue. Real service on a real socket, real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from market_data_store.client import BarsRejectedError, StoreClient
from market_data_store.storage import apply_migrations
from tests.support.bars import wire_bars
from tests.support.postgres import DatabaseFactory, database_of, reader_role_of, replace_url
from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

ADMIN = "admin-token-for-tenant-tests"
ALPHA = "alpha-token-0123456789"
BETA_NEW, BETA_OLD = "beta-token-new-0123456789", "beta-token-old-0123456789"
TENANTS = {"alpha": ALPHA, "beta": [BETA_NEW, BETA_OLD]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(n: int = 3, *, provider: str = "ibkr", close: str = "1.5", **fields: Any) -> Any:
    return {
        "provider": provider,
        "bars": wire_bars(n, open="1", high="2", low="1", close=close, **fields),
    }


QUERY = {"provider": "ibkr", "symbol": "AAPL", "resolution": "1m"}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url, str(tmp_path), ADMIN_TOKEN=ADMIN, MDS_AUTH_TENANTS=json.dumps(TENANTS)
    )
    async with running_service(settings) as svc:
        yield svc


async def write(svc: RunningService, token: str, payload: Any) -> httpx.Response:
    return await svc.client.post(
        "/v1/bars", json=payload, params={"wait": "commit"}, headers=bearer(token)
    )


async def closes(svc: RunningService, token: str, **query: str) -> list[str]:
    answer = await svc.client.get("/v1/bars", params={**QUERY, **query}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return [b["close"] for b in answer.json()["bars"]]


async def test_each_tenant_writes_and_reads_only_its_own_bars(
    service: RunningService, database_url: str
) -> None:
    # the same keys (provider, symbol, resolution, ts) for both: two rows each, never one
    assert (await write(service, ALPHA, body(close="1.5"))).status_code == 201
    assert (await write(service, BETA_NEW, body(close="1.75"))).status_code == 201
    assert await closes(service, ALPHA) == ["1.5"] * 3
    assert await closes(service, BETA_NEW) == ["1.75"] * 3
    assert await closes(service, BETA_OLD) == ["1.75"] * 3  # a rotation: both tokens
    answer = await service.client.get(  # the scheme is case-insensitive (RFC 9110 11.1)
        "/v1/bars", params=QUERY, headers={"Authorization": f"bearer  {ALPHA}"}
    )
    assert [b["close"] for b in answer.json()["bars"]] == ["1.5"] * 3
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch("SELECT tenant_id, count(*) FROM bars GROUP BY 1 ORDER BY 1")
    finally:
        await conn.close()
    assert [tuple(r) for r in stored] == [("alpha", 3), ("beta", 3)]


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    "authorization",
    [
        None,  # no token
        "Bearer",
        f"Token {ALPHA}",
        f"{ALPHA}",  # no scheme
        f"Basic {ALPHA}",
        f"Bearer {ALPHA[:-1]}",  # a prefix of a real token
        f"Bearer {ALPHA}x",
        f"Bearer {ALPHA.upper()}",
        f"Bearer {ADMIN}",  # the admin token names no tenant
        f"Bearer {ALPHA},{BETA_NEW}",
        "Bearer alpha",  # the tenant's name is not its token
    ],
)
async def test_no_token_or_a_forged_one_is_401(
    service: RunningService, method: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    if method == "POST":
        answer = await service.client.post("/v1/bars", json=body(), headers=headers)
    else:
        answer = await service.client.get("/v1/bars", params=QUERY, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert ALPHA not in answer.text
    assert ADMIN not in answer.text


async def test_two_authorization_headers_are_401_whichever_is_valid(
    service: RunningService,
) -> None:
    headers = [("Authorization", f"Bearer {ALPHA}"), ("Authorization", f"Bearer {BETA_NEW}")]
    answer = await service.client.get("/v1/bars", params=QUERY, headers=headers)
    assert answer.status_code == 401


async def test_the_store_level_routes_stay_open_and_admin_stays_admin(
    service: RunningService,
) -> None:
    for path in ("/healthz", "/health", "/readyz", "/metrics", "/v1/feedback/state", "/"):
        assert (await service.client.get(path)).status_code == 200, path
    # admin routes: the admin token, never a tenant's
    for token, status in ((ALPHA, 401), (BETA_OLD, 401), (ADMIN, 200)):
        answer = await service.client.get("/admin/dlq", headers=bearer(token))
        assert answer.status_code == status


async def test_attack_pass_nothing_crosses(service: RunningService, database_url: str) -> None:
    # beta's bars under a provider name alpha uses, and alpha under "beta"'s: providers
    # are not tenants, nothing crosses
    assert (await write(service, BETA_NEW, body(provider="ibkr", close="1.75"))).status_code == 201
    assert (await write(service, ALPHA, body(provider="beta", close="1.5"))).status_code == 201
    assert await closes(service, ALPHA) == []
    assert await closes(service, ALPHA, provider="beta") == ["1.5"] * 3
    assert await closes(service, BETA_NEW, provider="beta") == []
    # SQL in every field, a producer header naming the other tenant: the symbol and
    # resolution are refused by their rules (422, each listed); a provider may be any
    # printable text, and is stored as text: alpha's, under that exact name
    hostile = "x' OR tenant_id <> 'alpha' --"
    answer = await service.client.post(
        "/v1/bars",
        json=body(provider=hostile, symbol=hostile, resolution=hostile),
        headers={**bearer(ALPHA), "x-mds-producer": "beta/"},
    )
    assert answer.status_code == 422
    assert {(e["index"], e["field"]) for e in answer.json()["errors"]} == {
        (i, f) for i in range(3) for f in ("symbol", "resolution")
    }
    answer = await write(service, ALPHA, body(provider=hostile, close="1.25"))
    assert answer.status_code == 201
    assert await closes(service, ALPHA, provider=hostile) == ["1.25"] * 3
    assert await closes(service, BETA_NEW, provider=hostile) == []
    for key in ("symbol", "resolution", "start"):
        answer = await service.client.get(
            "/v1/bars", params={**QUERY, key: hostile}, headers=bearer(ALPHA)
        )
        assert answer.status_code == 400, key
    # tenant given as a query parameter or a header other than the token: ignored
    answer = await service.client.get(
        "/v1/bars",
        params={**QUERY, "tenant": "beta", "tenant_id": "beta"},
        headers={**bearer(ALPHA), "x-tenant": "beta", "x-mds-tenant": "beta"},
    )
    assert answer.status_code in (200, 400)
    assert "1.75" not in answer.text
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT tenant_id, provider, count(*) FROM bars GROUP BY 1, 2 ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in stored] == [
        ("alpha", "beta", 3),
        ("alpha", hostile, 3),
        ("beta", "ibkr", 3),
    ]


async def test_the_reader_role_sees_only_the_tenant_set_and_nothing_without_one(
    service: RunningService, database_url: str
) -> None:
    assert (await write(service, ALPHA, body(close="1.5"))).status_code == 201
    assert (await write(service, BETA_NEW, body(close="1.75"))).status_code == 201
    reader = reader_role_of(database_of(database_url))
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT name FROM mds_reader_role") == reader
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {reader}")
            assert await conn.fetchval("SELECT count(*) FROM bars") == 0  # no tenant set
            await conn.execute("SET LOCAL app.tenant_id = 'alpha'")
            assert await conn.fetchval("SELECT count(*) FROM bars") == 3
            # whatever the SQL asks for, the other tenant's rows are not there
            assert await conn.fetchval("SELECT count(*) FROM bars WHERE tenant_id = 'beta'") == 0
            await conn.execute("SET LOCAL app.tenant_id = ''")
            assert await conn.fetchval("SELECT count(*) FROM bars") == 0
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {reader}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM bars")  # it may read, and only read
    finally:
        await conn.close()


async def test_a_tenant_beyond_its_share_of_the_queue_alone_gets_503(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = service_settings(
        proxy.url_for(database_url),
        str(tmp_path),
        ADMIN_TOKEN=ADMIN,
        MDS_AUTH_TENANTS=json.dumps(TENANTS),
        MDS_COORDINATOR_CAPACITY="100",
        MDS_COORDINATOR_TENANT_SHARE="0.3",  # 30 bars each
        MDS_COORDINATOR_OVERFLOW_STRATEGY="error",
        MDS_INGEST_MAX_BARS_PER_REQUEST="100",
    )
    async with running_service(settings) as svc:
        proxy.hang()  # nothing is written: what is accepted stays held
        # a request larger than a tenant's share could never fit: 413 (the client splits)
        too_large = await svc.client.post("/v1/bars", json=body(31), headers=bearer(ALPHA))
        assert too_large.status_code == 413
        assert "share of the write queue (30)" in too_large.json()["detail"]
        first = await svc.client.post("/v1/bars", json=body(20), headers=bearer(ALPHA))
        assert first.status_code == 202
        refused = await svc.client.post(
            "/v1/bars", json=body(11, close="1.25"), headers=bearer(ALPHA)
        )
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["feedback"]["reason"] == "tenant_share"
        assert (
            await svc.client.post("/v1/bars", json=body(10), headers=bearer(ALPHA))
        ).status_code == 202
        # the other tenant is not held back by alpha's share
        other = await svc.client.post("/v1/bars", json=body(30), headers=bearer(BETA_OLD))
        assert other.status_code == 202
        proxy.restore()
        shares = svc.components.tenant_shares
        await until(lambda: shares.held("alpha") == 0 and shares.held("beta") == 0, timeout=30)
        assert (
            await svc.client.post("/v1/bars", json=body(30), headers=bearer(ALPHA))
        ).status_code == 202


async def test_the_client_writes_as_its_tenant_and_a_wrong_token_fails_at_once(
    service: RunningService,
) -> None:
    bars = wire_bars(50, open="1", high="2", low="1", close="1.5")
    async with StoreClient(service.base_url, provider="ibkr", token=BETA_OLD) as client:
        await client.write(bars)
        await client.flush()
    assert await closes(service, BETA_NEW) == ["1.5"] * 50
    assert await closes(service, ALPHA) == []
    client = StoreClient(service.base_url, provider="ibkr", token="not-a-tenant-token")
    await client.start()
    try:
        await client.write(bars)
        with pytest.raises(BarsRejectedError) as refused:
            await client.flush()
        assert refused.value.status == 401
    finally:
        client.take_failures()
        await client.aclose()


async def test_a_non_superuser_owner_writes_by_copy_and_reads_under_rls(
    db_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """What production runs: the service's user owns the table (COPY allowed: RLS does
    not apply to the owner) and is no superuser (so RLS applies to its reads, once it
    becomes the reader role)."""
    url = await db_factory.create()
    owner = f"mds_owner_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(db_factory.server_url)
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE")
        await admin.execute(f'ALTER DATABASE "{database_of(url)}" OWNER TO {owner}')
        settings = service_settings(
            replace_url(url, user=owner),
            str(tmp_path),
            ADMIN_TOKEN=ADMIN,
            MDS_AUTH_TENANTS=json.dumps(TENANTS),
        )
        async with running_service(settings) as svc:
            for token, close in ((ALPHA, "1.5"), (BETA_NEW, "1.75")):
                answer = await write(svc, token, body(close=close))
                # a COPY refused (RLS) would dead-letter every bar: all committed
                assert answer.status_code == 201
                assert answer.json()["committed"] == 3
                assert answer.json().get("dead_lettered") in (None, 0)
            assert await closes(svc, ALPHA) == ["1.5"] * 3
            assert await closes(svc, BETA_NEW) == ["1.75"] * 3
        owned = await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", owner)
        assert owned is False
    finally:
        await db_factory.drop(url)
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def test_the_user_of_one_store_cannot_read_another_stores_bars(
    db_factory: DatabaseFactory,
) -> None:
    """Two stores on one cluster, each its database and its (non-superuser) user: roles
    are cluster-wide, so each database has a reader role of its own; the other store's
    user can neither become it nor read the table."""
    urls = [await db_factory.create() for _ in range(2)]
    owners = [f"mds_owner_{uuid.uuid4().hex[:12]}" for _ in urls]
    admin = await asyncpg.connect(db_factory.server_url)
    try:
        for url, owner in zip(urls, owners, strict=True):
            await admin.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE")
            await admin.execute(f'ALTER DATABASE "{database_of(url)}" OWNER TO {owner}')
            conn = await asyncpg.connect(replace_url(url, user=owner))
            try:
                await apply_migrations(conn)
                await conn.execute(
                    "INSERT INTO bars (tenant_id, provider, symbol, resolution, ts, open, high,"
                    " low, close, volume) VALUES ('alpha', 'p', 'S', '1m', now(), 1, 1, 1, 1, 1)"
                )
            finally:
                await conn.close()
        roles = [reader_role_of(database_of(url)) for url in urls]
        assert roles[0] != roles[1]
        # store B's user, in store A's database
        intruder = await asyncpg.connect(replace_url(urls[0], user=owners[1]))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await intruder.execute(f"SET ROLE {roles[0]}")
            await intruder.execute(f"SET ROLE {roles[1]}")  # its own store's reader
            await intruder.execute("SET app.tenant_id = 'alpha'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await intruder.fetchval("SELECT count(*) FROM bars")
        finally:
            await intruder.close()
    finally:
        for url in urls:
            await db_factory.drop(url)
        for owner in owners:
            await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def test_a_dead_letter_keeps_its_tenant_through_the_replay(
    service: RunningService, database_url: str
) -> None:
    """Bars the database refuses (a test-only trigger) are dead-lettered as their
    tenant's; the admin sees the tenant in each record; replayed once the cause is
    gone, they land as that tenant's, and only it reads them."""
    trigger = """
        CREATE FUNCTION test_reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.symbol = 'POISON' THEN
                RAISE EXCEPTION 'test poison row' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_reject_poison BEFORE INSERT OR UPDATE ON bars
            FOR EACH ROW EXECUTE FUNCTION test_reject_poison();
    """
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(trigger)
        answer = await write(service, BETA_NEW, body(2, symbol="POISON"))
        assert answer.status_code == 201
        assert answer.json()["dead_lettered_indices"] == [0, 1]
        admin = bearer(ADMIN)
        summary = (await service.client.get("/admin/dlq", headers=admin)).json()
        assert {item["tenant"] for r in summary["recent"] for item in r["items"]} == {"beta"}
        await conn.execute(
            "DROP TRIGGER test_reject_poison ON bars; DROP FUNCTION test_reject_poison()"
        )
    finally:
        await conn.close()
    replayed = await service.client.post("/admin/dlq/replay", headers=bearer(ADMIN))
    assert replayed.status_code == 200, replayed.text

    async def landed() -> bool:
        return len(await closes(service, BETA_OLD, symbol="POISON")) == 2

    await until(landed, timeout=30)
    assert await closes(service, ALPHA, symbol="POISON") == []
