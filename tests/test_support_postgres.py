"""tests/support/postgres.py: URLs rewritten for a test keep naming the server they were given."""

from __future__ import annotations

import pytest

from tests.support.postgres import database_of, replace_url

EMBEDDED = "postgresql://postgres:@/postgres?host=/tmp/tmpab%2Bc/pg"


def test_replace_url_keeps_the_socket_folder_of_an_embedded_server() -> None:
    url = replace_url(EMBEDDED, user="u", password="p", database="d")
    assert url == "postgresql://u:p@/d?host=/tmp/tmpab%2Bc/pg"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "postgresql://me:p%40ss@db.example:5433/mds?sslmode=disable#f"),
        ({"user": "x y"}, "postgresql://x%20y:p%40ss@db.example:5433/mds?sslmode=disable#f"),
        ({"password": "a:b@c/d"}, "postgresql://me:a%3Ab%40c%2Fd@db.example:5433/mds?sslmode=disable#f"),
        ({"database": "mds_t1"}, "postgresql://me:p%40ss@db.example:5433/mds_t1?sslmode=disable#f"),
    ],
)  # fmt: skip
def test_replace_url_changes_only_what_it_is_given(changes: dict[str, str], expected: str) -> None:
    url = "postgresql://me:p%40ss@db.example:5433/mds?sslmode=disable#f"
    assert replace_url(url, **changes) == expected


def test_replace_url_adds_a_password_to_a_url_without_one() -> None:
    assert replace_url("postgresql://postgres@127.0.0.1/x", password="s") == (
        "postgresql://postgres:s@127.0.0.1/x"
    )
    assert replace_url("postgresql://127.0.0.1/x", user="u") == "postgresql://u@127.0.0.1/x"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (EMBEDDED, "postgres"),
        ("postgresql://postgres@127.0.0.1:5432/mds_ci_1?sslmode=disable", "mds_ci_1"),
        ("postgresql://postgres@127.0.0.1/my%20db", "my db"),
        ("postgresql://postgres@127.0.0.1", ""),
    ],
)
def test_database_of_reads_the_path_never_the_query(url: str, name: str) -> None:
    assert database_of(url) == name
