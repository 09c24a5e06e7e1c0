"""Rules beyond one key: requests that fit the queue, the admin token in every env."""

from __future__ import annotations

import re
import socket

import pytest

from market_data_store.config import ConfigError, load_settings
from market_data_store.config.schema import ID_PART


def test_error_strategy_needs_requests_that_fit_the_queue() -> None:
    with pytest.raises(ConfigError, match=r"ingest.max_bars_per_request \(50000\) must not exceed"):
        load_settings({"MDS_COORDINATOR_OVERFLOW_STRATEGY": "error"})
    ok = load_settings(
        {"MDS_COORDINATOR_OVERFLOW_STRATEGY": "error", "MDS_INGEST_MAX_BARS_PER_REQUEST": "10000"}
    )
    assert ok.coordinator.overflow_strategy == "error"


@pytest.mark.parametrize("token", ["x", "1", "password", "CHANGEME", "changeme", "a" * 31])
def test_production_refuses_weak_admin_tokens(token: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"MDS_ENV": "production", "ADMIN_TOKEN": token})
    assert "secrets.token_urlsafe(32)" in str(refused.value)
    assert repr(token) not in str(refused.value)  # a secret, even a weak one


def test_production_accepts_a_long_printable_ascii_token() -> None:
    token = "0123456789abcdefghijklmnopqrstuv"
    assert load_settings({"MDS_ENV": "production", "ADMIN_TOKEN": token}).admin_token == token


@pytest.mark.parametrize("env", ["dev", "production"])
@pytest.mark.parametrize(
    "token", ["pässwörd-" * 4, "tab\tinside-the-token-0123456789abc", " " + "a" * 40]
)
def test_admin_token_must_be_printable_ascii_in_every_env(env: str, token: str) -> None:
    """A header carries bytes: a client sending UTF-8 would never match a str compared
    as latin-1, so such a token is refused at load rather than accepted and never met."""
    with pytest.raises(ConfigError, match=r"admin_token .*printable ASCII") as refused:
        load_settings({"MDS_ENV": env, "ADMIN_TOKEN": token})
    assert token.strip() not in str(refused.value)


@pytest.mark.parametrize(
    ("host", "resolved"),
    [
        ("store-0", "store-0"),
        ("my host.example", "my-host.example"),
        ("-odd\u00e9name", "odd-name"),
        ("x" * 80, "x" * 63),
        ("", "store"),
    ],
)
def test_the_host_name_default_follows_the_id_rule(
    monkeypatch: pytest.MonkeyPatch, host: str, resolved: str
) -> None:
    """Other replicas refuse events whose coordinator id breaks the rule: a host name
    that breaks it is made to follow it, never used as is."""
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    instance = load_settings({}).server.resolved_instance_id
    assert instance == resolved
    assert re.fullmatch(ID_PART, instance)
