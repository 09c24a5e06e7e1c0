"""Every route that needs the database answers 503 problem + ``Retry-After`` while it
is away (a real proxy cut, a real dropped database), and storage says so with its own
``DatabaseUnavailableError``: nothing above ``storage`` imports asyncpg."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncpg
import httpx
import pytest

import market_data_store.http
from market_data_store.storage import DatabaseUnavailableError, open_pool
from tests.support.postgres import database_of, replace_url
from tests.support.service import running_service, service_settings
from tests.support.tcp_proxy import TcpProxy

TOKEN = "admin-token-for-outage-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ = {"provider": "a", "symbol": "AAPL", "resolution": "1m"}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance"}

# every route that touches the database: (method, path, query)
DATABASE_ROUTES = [
    ("GET", "/admin/schema/version", {}),
    ("POST", "/admin/migrate", {}),
    ("GET", "/v1/bars", READ),
]


async def call(
    client: httpx.AsyncClient, method: str, path: str, query: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, params=query, headers=AUTH)


def assert_503_problem(response: httpx.Response, path: str, retry_after: str) -> None:
    assert response.status_code == 503, (path, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == retry_after
    body = response.json()
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == 503
    assert body["instance"] == path
    assert body["retry_after"] == int(retry_after)
    assert "asyncpg" not in response.text
    assert "Error" not in body["detail"]


async def test_every_database_route_answers_503_while_the_database_is_cut(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = service_settings(proxy.url_for(database_url), str(tmp_path), ADMIN_TOKEN=TOKEN)
    async with running_service(settings) as svc:
        for method, path, query in DATABASE_ROUTES:
            assert (await call(svc.client, method, path, query)).status_code == 200, path
        proxy.cut()
        for method, path, query in DATABASE_ROUTES:
            assert_503_problem(await call(svc.client, method, path, query), path, "5")
        proxy.restore()
        for method, path, query in DATABASE_ROUTES:
            assert (await call(svc.client, method, path, query)).status_code == 200, path


async def test_a_dropped_database_is_503_and_permanent(
    database_url: str, pg_server_url: str, tmp_path: Path
) -> None:
    """Connections to a database that no longer exists are refused for good: still a
    503 problem, with a longer ``Retry-After`` (an operator has to act)."""
    settings = service_settings(database_url, str(tmp_path), ADMIN_TOKEN=TOKEN)
    async with running_service(settings) as svc:
        name = database_of(database_url)
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        for method, path, query in DATABASE_ROUTES:
            assert_503_problem(await call(svc.client, method, path, query), path, "60")


async def test_open_pool_says_a_missing_database_is_permanent(pg_server_url: str) -> None:
    url = replace_url(pg_server_url, database="mds_no_such_database_here")
    with pytest.raises(DatabaseUnavailableError) as info:
        await open_pool(url, startup_timeout=5)
    assert info.value.permanent
    assert isinstance(info.value.__cause__, asyncpg.InvalidCatalogNameError)


async def test_open_pool_says_an_unreachable_database_is_not_permanent(tmp_path: Path) -> None:
    proxy = await TcpProxy(("127.0.0.1", 9)).start()  # nothing listens on port 9
    proxy.cut()  # refuse every connection
    try:
        url = proxy.url_for("postgresql://postgres@x/postgres")
        with pytest.raises(DatabaseUnavailableError) as info:
            await open_pool(url, connect_timeout=1, startup_timeout=0.5)
    finally:
        await proxy.close()
    assert not info.value.permanent


def test_http_never_imports_asyncpg() -> None:
    package = Path(market_data_store.http.__file__).parent
    offenders = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "asyncpg" for name in names):
                offenders.append(str(source.relative_to(package)))
    assert offenders == []
