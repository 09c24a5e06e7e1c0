"""A query parameter that takes one value, given twice, is a 400 problem naming it, on
every route (never one of the values silently); repeatable ones stay repeatable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.service import RunningService, running_service, service_settings

TOKEN = "admin-token-for-query-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ = "provider=a&symbol=AAPL&resolution=1m"
BODY = {"provider": "p", "bars": []}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(database_url, str(tmp_path), ADMIN_TOKEN=TOKEN)
    async with running_service(settings) as svc:
        yield svc


async def status_and_body(
    client: httpx.AsyncClient, method: str, url: str
) -> tuple[int, str, dict[str, object]]:
    """Status, content type and (problem) body; a stream is closed after its head."""
    kwargs = {"json": BODY} if method == "POST" and url.startswith("/v1/bars") else {}
    async with client.stream(method, url, headers=AUTH, **kwargs) as response:  # type: ignore[arg-type]
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return response.status_code, content_type, {}
        await response.aread()
        return response.status_code, content_type, response.json()


@pytest.mark.parametrize(
    ("method", "url", "name"),
    [
        ("GET", f"/v1/bars?{READ}&limit=1&limit=2", "limit"),
        ("GET", f"/v1/bars?{READ}&symbol=MSFT", "symbol"),
        ("GET", f"/v1/bars?{READ}&provider=a", "provider"),
        ("GET", f"/v1/bars?{READ}&resolution=1d", "resolution"),
        ("GET", f"/v1/bars?{READ}&start=2024-01-01T00:00:00Z&start=2024-01-02T00:00:00Z", "start"),
        ("POST", "/v1/bars?wait=commit&wait=x", "wait"),
        ("POST", "/v1/bars?wait=commit&wait=commit", "wait"),
        ("GET", "/v1/feedback/stream?min_level=ok&min_level=hard", "min_level"),
        ("GET", "/v1/feedback/stream?last_event_id=1&last_event_id=2", "last_event_id"),
        ("GET", "/admin/dlq?recent=1&recent=2", "recent"),
    ],
)
async def test_a_scalar_parameter_given_twice_is_400_naming_it(
    service: RunningService, method: str, url: str, name: str
) -> None:
    status, content_type, body = await status_and_body(service.client, method, url)
    assert status == 400, (url, status, body)
    assert content_type == "application/problem+json"
    assert body["errors"] == [
        {"key": name, "source": "query", "message": "given more than once; give it once"}
    ]
    assert name in str(body["detail"])


async def test_repeatable_parameters_stay_repeatable(service: RunningService) -> None:
    url = "/v1/feedback/stream?coordinator_id=a&coordinator_id=b&min_level=soft"
    status, content_type, _ = await status_and_body(service.client, "GET", url)
    assert (status, content_type.split(";")[0]) == (200, "text/event-stream")
    status, _, _ = await status_and_body(
        service.client, "GET", f"/v1/bars?{READ}&unknown=1&unknown=2"
    )
    assert status == 200  # parameters a route does not take are not its business


@pytest.mark.parametrize(
    ("method", "url", "name"),
    [
        ("GET", f"/v1/bars?{READ}&start=null", "start"),
        ("GET", f"/v1/bars?{READ}&end=null", "end"),
        ("POST", "/v1/bars?wait=null", "wait"),
        ("GET", "/v1/feedback/stream?min_level=null", "min_level"),
    ],
)
async def test_null_is_not_a_value_of_a_parameter(
    service: RunningService, method: str, url: str, name: str
) -> None:
    """The document says a date-time, "commit", a level: Litestar read ``null`` as the
    parameter left out."""
    status, content_type, body = await status_and_body(service.client, method, url)
    assert status == 400, (url, status, body)
    assert content_type == "application/problem+json"
    assert body["errors"] == [
        {"key": name, "source": "query", "message": "null is not a value: leave the parameter out"}
    ]


async def test_null_is_text_where_a_parameter_is_text(service: RunningService) -> None:
    status, _, body = await status_and_body(
        service.client, "GET", "/v1/feedback/stream?last_event_id=null"
    )
    assert status == 400  # checked as the id it is not
    assert body["errors"][0]["key"] == "last_event_id"  # type: ignore[index]
