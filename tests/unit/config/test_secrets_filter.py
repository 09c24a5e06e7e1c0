"""Whatever library logs a configured URL, its secrets never reach the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from market_data_store.config import SecretsFilter, guard_logging, load_settings

WEBHOOK = "http://user:PASS-w3bh00k@hooks.example:8443/hook/PATHTOKEN-77?key=QUERYKEY-88&x=1"
DATABASE = "postgresql://me:DBPASS-42@db:5432/x?sslpassword=SSLPASS-43&sslmode=require"
REDIS = "redis://:REDISPASS-44@cache:6379/0"
SECRETS = (
    "PASS-w3bh00k",
    "PATHTOKEN-77",
    "QUERYKEY-88",
    "DBPASS-42",
    "SSLPASS-43",
    "REDISPASS-44",
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger tree whose handler is guarded as ``mds-store`` guards the root."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    settings = load_settings(
        {
            "DATABASE_URL": DATABASE,
            "MDS_FEEDBACK_WEBHOOK_URL": WEBHOOK,
            "MDS_FEEDBACK_REDIS_URL": REDIS,
        }
    )
    guard_logging(settings, [handler])
    parent = logging.getLogger("secrets-filter-test")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    try:
        yield parent, out
    finally:
        parent.removeHandler(handler)


def test_a_third_party_logger_printing_the_webhook_url_shows_its_origin_only(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    parent, out = captured
    # httpx's own line, as it logs every request at INFO
    parent.getChild("httpx").info('HTTP Request: %s %s "%s"', "POST", WEBHOOK, "HTTP/1.1 200 OK")
    text = out.getvalue()
    assert "http://hooks.example:8443/…" in text
    assert not [s for s in SECRETS if s in text], text


def test_a_rebuilt_or_decoded_url_is_masked_too(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    parent, out = captured
    # the URL as a client library rebuilds it: no userinfo, the query re-ordered
    parent.warning("POST http://hooks.example:8443/hook/PATHTOKEN-77?x=1&key=QUERYKEY-88 failed")
    parent.warning("connecting with password %s", "DBPASS-42")
    parent.warning("redis at redis://:REDISPASS-44@cache:6379/0 and %r", {"p": "SSLPASS-43"})
    text = out.getvalue()
    assert not [s for s in SECRETS if s in text], text
    assert text.count("***") >= 4


def test_exception_text_is_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    parent, out = captured
    try:
        raise ConnectionError(f"cannot reach {DATABASE}")
    except ConnectionError:
        parent.getChild("asyncpg").exception("connection failed")
    text = out.getvalue()
    assert "Traceback" in text
    assert "ConnectionError: cannot reach postgresql://me:***@db" in text
    assert not [s for s in SECRETS if s in text], text


def test_short_secrets_are_masked_inside_urls_only() -> None:
    masking = SecretsFilter(load_settings({"DATABASE_URL": "postgresql://me:ab@db/x"}))
    assert masking.clean("postgresql://me:ab@db/x") == "postgresql://me:***@db/x"
    assert masking.clean("lab tables") == "lab tables"


def test_guarding_twice_keeps_one_filter_and_quiets_httpx() -> None:
    handler = logging.StreamHandler(io.StringIO())
    settings = load_settings({"MDS_FEEDBACK_WEBHOOK_URL": WEBHOOK})
    guard_logging(settings, [handler])
    guard_logging(settings, [handler])
    assert sum(isinstance(f, SecretsFilter) for f in handler.filters) == 1
    assert logging.getLogger("httpx").level == logging.WARNING


def test_records_without_an_exception_or_that_cannot_be_read_pass_without_raising(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A filter runs in the logging call: if it raised, the code that logged would
    fail (the Redis bridge's reconnect loop, logging with ``exc_info=False``, did)."""
    parent, out = captured
    parent.log(logging.WARNING, "bridge: %s; resubscribing", "ConnectionError", exc_info=False)
    parent.warning("%d bars", "not a number")  # args that do not fit the message
    lines = out.getvalue().splitlines()
    assert lines[0] == "secrets-filter-test: bridge: ConnectionError; resubscribing"
    assert lines[1].startswith("secrets-filter-test: <a WARNING record of secrets-filter-test")


def test_percent_encoding_in_either_case_is_masked() -> None:
    masking = SecretsFilter(
        load_settings({"MDS_FEEDBACK_WEBHOOK_URL": "https://h.example/hook/Path%7cTok3n"})
    )
    for shown in ("/hook/Path%7CTok3n", "/hook/Path%7cTok3n", "/hook/Path|Tok3n"):
        assert "Tok3n" not in masking.clean(f"POST https://h.example{shown} failed"), shown


def test_a_long_message_is_masked_in_linear_time() -> None:
    """``redact_text`` tried a URL at each position of a long run of scheme
    characters: 10 s for 100,000 of them (the filter runs in the logging call)."""
    masking = SecretsFilter(load_settings({"DATABASE_URL": "postgresql://me:pw-5ecret@db/x"}))
    text = "a" * 2_000_000 + " postgresql://me:pw-5ecret@db/x"
    assert masking.clean(text).endswith(" postgresql://me:***@db/x")
