"""The OpenAPI document tells the truth, and schemathesis keeps it so.

The live service (real uvicorn, real PostgreSQL) is fuzzed by schemathesis' CLI with
the admin token: every route, all checks, at least 1,000 generated cases; any finding
fails the test. What JSON Schema cannot express is configured, with reasons, in
``schemathesis.toml`` beside this file (the event stream is read for one event or
one second; cross-field rules answer 422)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from litestar.routes import HTTPRoute

from market_data_store.ingest import MAX_INTEGER_DIGITS, MAX_PROVIDER_LENGTH, MAX_SYMBOL_LENGTH
from tests.support.bars import wire_bar
from tests.support.service import RunningService, running_service, service_settings

TOKEN = "contract-admin-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HERE = Path(__file__).parent
MIN_CASES = 1_000
RUN_TIMEOUT = 400  # seconds; the run takes about two minutes on two cores
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ERROR_STATUSES = {"400", "401", "404", "409", "413", "415", "422", "501", "503"}
# a readiness report, not a problem, says why a replica is not ready
READINESS_REPORTS = {("/readyz", "503"), ("/admin/health", "503")}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=TOKEN,
        MDS_INGEST_MAX_BARS_PER_REQUEST="1000",
        MDS_FEEDBACK_SSE_HEARTBEAT_SEC="0.5",
        MDS_RETENTION_BARS="365d",  # /admin/retention/apply works on the fuzzed bars
    )
    async with running_service(settings) as svc:
        yield svc


async def openapi(service: RunningService) -> dict[str, Any]:
    response = await service.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_the_document_describes_bodies_statuses_and_problems(
    service: RunningService,
) -> None:
    paths = (await openapi(service))["paths"]
    ingest = paths["/v1/bars"]["post"]
    body = ingest["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "application/msgpack", "text/csv"}
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["provider", "bars"]
    assert set(schema["properties"]["bars"]["items"]["required"]) >= {"symbol", "ts", "open"}
    statuses = {"201", "202", "400", "401", "413", "415", "422", "501", "503"}
    assert set(ingest["responses"]) == statuses
    assert set(paths["/v1/bars"]["get"]["responses"]) == {"200", "400", "401", "503"}
    for operation in paths["/v1/bars"].values():  # a tenant's token, or none without tenants
        assert operation["security"] == [{"TenantToken": []}, {}]
    admin = (
        "/admin/schema/version",
        "/admin/migrate",
        "/admin/dlq",
        "/admin/dlq/replay",
        "/admin/retention/apply",
    )
    for path in (*admin, "/admin/health"):
        for operation in paths[path].values():
            assert "401" in operation["responses"], path
    for path, operations in paths.items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                # absent or a value: null has no spelling in a query or a header
                assert "null" not in json.dumps(parameter["schema"]), (path, parameter)
    replay = paths["/admin/dlq/replay"]["post"]["responses"]
    assert set(replay) == {"200", "401", "404"}
    retention = paths["/admin/retention/apply"]["post"]["responses"]
    assert set(retention) == {"200", "401", "409", "503"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status in ERROR_STATUSES and (path, status) not in READINESS_REPORTS:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ProblemBody"}, (path, status)
                    # every 503 problem says when to come back; the probes' reports do not
                    retry_after = response.get("headers", {}).get("Retry-After")
                    if status == "503":
                        assert retry_after is not None, (method, path)
                        assert retry_after["required"] is True
                        assert retry_after["schema"] == {"type": "integer", "minimum": 0}
                    else:
                        assert retry_after is None, (method, path, status)
    for path, status in READINESS_REPORTS:
        assert "headers" not in paths[path]["get"]["responses"][status], path


_BIG = 10**MAX_INTEGER_DIGITS
_PRICES = ("open", "high", "low", "close")
# One field of a bar, or the body's provider: a value at the limit, and one just past it.
BODY_LIMITS: list[tuple[str, Any, Any]] = [
    ("provider", "p" * MAX_PROVIDER_LENGTH, "p" * (MAX_PROVIDER_LENGTH + 1)),
    ("provider", " p ", " "),
    ("symbol", " " + "S" * MAX_SYMBOL_LENGTH + " ", "S" * (MAX_SYMBOL_LENGTH + 1)),
    ("symbol", "S", ""),
    ("resolution", "9999mo", "10000mo"),
    ("ts", "2024-01-02T00:00:00+01:00", "2024-01-02T00:00:00"),
    ("prices", _BIG - 1, _BIG),
    ("prices", -_BIG + 1, -_BIG),
    ("prices", "-1.5E+3", "1.5e"),
    ("volume", "-0.0", "-1"),
    ("volume", 0, -1),
]
QUERY_LIMITS: list[tuple[str, str, str]] = [
    ("provider", "p" * MAX_PROVIDER_LENGTH, "p" * (MAX_PROVIDER_LENGTH + 1)),
    ("symbol", "S" * MAX_SYMBOL_LENGTH, "S" * (MAX_SYMBOL_LENGTH + 1)),
    ("resolution", "1s", "0s"),
]


def _body(field: str, value: Any) -> dict[str, Any]:
    if field == "provider":
        return {"provider": value, "bars": [wire_bar()]}
    fields = dict.fromkeys(_PRICES, value) if field == "prices" else {field: value}
    return {"provider": "limits", "bars": [wire_bar(**fields)]}


async def test_the_documents_field_rules_are_what_the_service_enforces(
    service: RunningService,
) -> None:
    """At each limit the document states, the service accepts what the document allows
    and refuses the value just past it (and the document refuses that value too)."""
    paths = (await openapi(service))["paths"]
    body_schema = paths["/v1/bars"]["post"]["requestBody"]["content"]["application/json"]
    body = jsonschema_rs.validator_for(body_schema["schema"], validate_formats=True)
    for field, at_limit, past in BODY_LIMITS:
        assert body.is_valid(_body(field, at_limit)), (field, at_limit)
        assert not body.is_valid(_body(field, past)), (field, past)
        accepted = await service.client.post("/v1/bars", json=_body(field, at_limit))
        assert accepted.status_code == 202, (field, at_limit, accepted.text)
        refused = await service.client.post("/v1/bars", json=_body(field, past))
        assert refused.status_code == 422, (field, past, refused.text)
    parameters = {p["name"]: p["schema"] for p in paths["/v1/bars"]["get"]["parameters"]}
    query = {"provider": "limits", "symbol": "AAPL", "resolution": "1m"}
    for name, at_limit, past in QUERY_LIMITS:
        check = jsonschema_rs.validator_for(parameters[name])
        assert check.is_valid(at_limit), name
        assert not check.is_valid(past), name
        ok = await service.client.get("/v1/bars", params={**query, name: at_limit})
        assert ok.status_code == 200, (name, ok.text)
        bad = await service.client.get("/v1/bars", params={**query, name: past})
        assert bad.status_code == 400, (name, bad.text)
    bars = body_schema["schema"]["properties"]["bars"]
    assert (bars["minItems"], bars["maxItems"]) == (1, 1000)  # MDS_INGEST_MAX_BARS_PER_REQUEST
    empty = await service.client.post("/v1/bars", json={"provider": "limits", "bars": []})
    assert empty.status_code == 422
    many = {"provider": "limits", "bars": [wire_bar(i) for i in range(1001)]}
    assert (await service.client.post("/v1/bars", json=many)).status_code == 413


def allow(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",") if method.strip()}


async def answer(
    service: RunningService, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """The status and headers only (without a body, and but for OPTIONS without the token:
    nothing is changed; an event stream is closed at once)."""
    async with service.client.stream(method, path, headers=headers) as response:
        return response


async def test_allow_lists_exactly_the_methods_every_route_answers(
    service: RunningService,
) -> None:
    """For every route: ``OPTIONS`` lists the methods that are answered, every other
    method is 405 with the same ``Allow``, and the document has the same operations."""
    documented = (await openapi(service))["paths"]
    routes = [route for route in service.app.routes if isinstance(route, HTTPRoute)]
    for route in routes:
        path = re.sub(r"\{[^}]*\}", "x", route.path_format)
        options = await answer(service, "OPTIONS", path, AUTH)  # admin routes: 401 without
        assert options.status_code == 204, path
        allowed = allow(options)
        assert allowed == set(route.route_handler_map), path
        for method in METHODS:
            response = await answer(service, method, path)
            if method in allowed:
                assert response.status_code != 405, (method, path)
            else:
                assert response.status_code == 405, (method, path)
                assert allow(response) == allowed, (method, path)
        if route.path in documented:
            operations = {method.upper() for method in documented[route.path]}
            assert operations | {"OPTIONS"} == allowed, path
    assert set(documented) <= {route.path for route in routes}
    assert allow(await answer(service, "OPTIONS", "/v1/bars", AUTH)) == {"GET", "POST", "OPTIONS"}


@pytest.mark.timeout(RUN_TIMEOUT + 60)
async def test_schemathesis_finds_nothing(service: RunningService, tmp_path: Path) -> None:
    text = await schemathesis(service, tmp_path, TOKEN, "300")
    cases = re.search(r"Test cases:\s*(\d+) generated", text)
    assert cases is not None, text[-6000:]
    assert int(cases[1]) >= MIN_CASES, text[-6000:]


@pytest.mark.timeout(RUN_TIMEOUT + 60)
async def test_schemathesis_finds_nothing_on_a_store_with_tenants(
    database_url: str, tmp_path: Path
) -> None:
    """/v1/bars and the other kinds' routes with tenants configured, fuzzed with a
    tenant's token (all checks, the ignored-auth one too: without the token every case
    must be 401)."""
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=TOKEN,
        MDS_INGEST_MAX_BARS_PER_REQUEST="1000",
        MDS_AUTH_TENANTS=json.dumps({"alpha": TENANT_TOKEN, "beta": "beta-" + TENANT_TOKEN}),
    )
    async with running_service(settings) as svc:
        text = await schemathesis(
            svc,
            tmp_path,
            TENANT_TOKEN,
            "25",
            "--include-path-regex",
            "^/v1/(bars|options|quotes|trades|fundamentals|news)(/latest)?$",
            "--phases",
            "fuzzing",  # the auth of every route, not its values again: the run above has them
        )
    cases = re.search(r"Test cases:\s*(\d+) generated", text)
    assert cases is not None, text[-6000:]
    assert int(cases[1]) >= 150, text[-6000:]


@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("accept", ["text/csv", "application/x-ndjson"])
async def test_schemathesis_finds_nothing_in_exports(
    service: RunningService, tmp_path: Path, accept: str
) -> None:
    """Every read route asked for an export: its answers as documented (a stream of the
    documented media type, or a problem)."""
    await service.client.post(  # something to export
        "/v1/bars", params={"wait": "commit"}, json={"provider": "x", "bars": [wire_bar(0)]}
    )
    text = await schemathesis(
        service,
        tmp_path,
        TOKEN,
        "15",
        "--include-method",
        "GET",
        "--include-path-regex",
        "^/v1/(bars|options|quotes|trades|fundamentals|news)$",
        "--header",
        f"Accept: {accept}",
    )
    cases = re.search(r"Test cases:\s*(\d+) generated", text)
    assert cases is not None, text[-6000:]
    assert int(cases[1]) >= 50, text[-6000:]


TENANT_TOKEN = "contract-tenant-token-" + "y" * 16


async def schemathesis(
    service: RunningService, tmp_path: Path, token: str, examples: str, *more: str
) -> str:
    """Run schemathesis' CLI against ``service`` with ``token``: its output; any
    finding fails the test."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "PYTHONPATH": str(HERE.parent.parent),
    }
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{service.base_url}/schema/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--workers",
        "2",
        "--max-examples",
        examples,
        "--request-timeout",
        "10",
        "--seed",
        "8",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *more,
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its cache (.schemathesis/) and Hypothesis' examples stay out of the repo
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace")
    print(text)  # the summary, with -s
    assert process.returncode == 0, text[-6000:]
    return text
