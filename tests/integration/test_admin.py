"""Admin routes: bearer token guard, schema version, migrate; production refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from market_data_store.config import ConfigError, load_settings
from market_data_store.http import create_app
from tests.support.service import RunningService, running_service, service_settings

TOKEN = "s3cret-admin-token"


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(database_url, str(tmp_path), ADMIN_TOKEN=TOKEN)
    async with running_service(settings) as svc:
        yield svc


@pytest.mark.parametrize("path", ["/admin/schema/version", "/admin/migrate"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_admin_requires_the_bearer_token(
    service: RunningService, path: str, headers: dict[str, str]
) -> None:
    method = service.client.post if path.endswith("migrate") else service.client.get
    response = await method(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert "token" in body["detail"]


async def test_schema_version_and_idempotent_migrate(service: RunningService) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await service.client.get("/admin/schema/version", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "0005"
    assert [m["version"] for m in body["applied"]] == ["0001", "0002", "0003", "0004", "0005"]
    assert body["pending"] == []

    response = await service.client.post("/admin/migrate", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"applied": [], "version": "0005"}


async def test_migrate_applies_what_is_pending(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(
        database_url, str(tmp_path), ADMIN_TOKEN=TOKEN, MDS_DATABASE_AUTO_MIGRATE="false"
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_service(settings) as svc:
        before = (await svc.client.get("/admin/schema/version", headers=auth)).json()
        pending = ["0001", "0002", "0003", "0004", "0005"]
        assert before == {"version": None, "applied": [], "pending": pending}
        response = await svc.client.post("/admin/migrate", headers=auth)
        assert response.json() == {
            "applied": [
                "0001_create_bars",
                "0002_timescale_hypertable",
                "0003_bars_checks",
                "0004_tenants",
                "0005_facts",
            ],
            "version": "0005",
        }


def test_production_refuses_the_default_admin_token() -> None:
    with pytest.raises(ConfigError, match="admin_token is still the default"):
        create_app(load_settings({"MDS_ENV": "production"}))
    with pytest.raises(ConfigError, match="at least 32"):
        create_app(load_settings({"MDS_ENV": "production", "ADMIN_TOKEN": "x"}))
    create_app(load_settings({"MDS_ENV": "production", "ADMIN_TOKEN": "x" * 32}))  # fine
