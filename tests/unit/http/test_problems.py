"""http/problems.py: every problem's ``title`` is RFC 9110's reason phrase of its status,
in the app's problems and in the transport's own refusals alike."""

from __future__ import annotations

import json

import pytest
from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.testing import TestClient

from market_data_store.config import load_settings
from market_data_store.http import create_app
from market_data_store.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from market_data_store.server.refusal import problem_response

# RFC 9110 section 15 (429: RFC 6585), written out here rather than derived: Python
# 3.11's HTTPStatus still says "Unprocessable Entity" and "Request Entity Too Large".
RFC9110 = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@get("/status/{code:int}", sync_to_thread=False)
def fail(code: FromPath[int]) -> None:
    raise HTTPException(status_code=code)


@pytest.fixture(scope="module")
def client() -> TestClient[Litestar]:
    return TestClient(Litestar([fail], exception_handlers=EXCEPTION_HANDLERS))


@pytest.mark.parametrize(("status", "title"), sorted(RFC9110.items()))
def test_a_problem_is_titled_with_the_rfc_9110_phrase(
    client: TestClient[Litestar], status: int, title: str
) -> None:
    response = client.get(f"/status/{status}")
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["title"] == title


@pytest.mark.parametrize(("status", "title"), sorted(RFC9110.items()))
def test_a_refusal_is_titled_and_phrased_as_rfc_9110(status: int, title: str) -> None:
    head, _, body = problem_response(status, "d").partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} {title}\r\n".encode())
    assert json.loads(body)["title"] == title


def test_every_problem_status_the_document_names_is_covered() -> None:
    document = create_app(load_settings({})).openapi_schema.to_schema()
    documented = {
        int(status)
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for status, response in operation.get("responses", {}).items()
        if PROBLEM_JSON in response.get("content", {})
    }
    assert documented
    assert documented <= set(RFC9110)
