"""URLs: refused at load when they cannot be read, never shown with a credential."""

from __future__ import annotations

import socket

import pytest

from market_data_store.config import (
    ConfigError,
    load_settings,
    redact_text,
    redact_url,
    redacted,
)


def test_redact_url_masks_every_password() -> None:
    assert redact_url("postgresql://me:pw@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_url("postgresql://db/x?password=pw&sslmode=require") == (
        "postgresql://db/x?password=***&sslmode=require"
    )
    assert redact_url("postgresql://u@/db?application_name=a@b") == (
        "postgresql://u@/db?application_name=a@b"
    )


def test_redacted_hides_secrets() -> None:
    s = load_settings({"DATABASE_URL": "postgresql://me:hunter2@db:5432/x", "ADMIN_TOKEN": "s"})
    data = redacted(s)
    assert data["database_url"] == "postgresql://me:***@db:5432/x"
    assert data["admin_token"] == "<set>"
    assert "hunter2" not in str(data)
    plain = redacted(load_settings({"DATABASE_URL": "postgresql://db/x"}))
    assert plain["database_url"] == "postgresql://db/x"
    assert plain["admin_token"] == "<default>"


def test_feedback_urls_are_redacted_and_instance_id_defaults_to_the_host_name() -> None:
    s = load_settings(
        {
            "MDS_FEEDBACK_WEBHOOK_URL": "https://hook:s3cret@example.test/services/T0/B0/t0k3n",
            "MDS_FEEDBACK_REDIS_URL": "redis://:hunter2@redis:6379/0",
        }
    )
    data = redacted(s)
    assert data["feedback"]["webhook"]["url"] == "https://example.test/…"  # path: secret
    assert data["feedback"]["redis"]["url"] == "redis://:***@redis:6379/0"
    assert "s3cret" not in str(data)
    assert "t0k3n" not in str(data)
    assert "hunter2" not in str(data)
    assert s.server.resolved_instance_id == socket.gethostname()
    named = load_settings({"MDS_SERVER_INSTANCE_ID": "store-0"})
    assert named.server.resolved_instance_id == "store-0"
    with pytest.raises(ConfigError, match=r"server\.instance_id"):
        load_settings({"MDS_SERVER_INSTANCE_ID": "a/b"})


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("MDS_FEEDBACK_REDIS_URL", "redis://:pa/ss99@redis:6379/0"),
        ("MDS_FEEDBACK_REDIS_URL", "redis://redis:99999/0"),
        ("MDS_FEEDBACK_WEBHOOK_URL", "http://[::1/hook"),
        ("MDS_FEEDBACK_WEBHOOK_URL", "http:///nohost"),
        ("DATABASE_URL", "postgresql://u:pw@db:port/x"),
    ],
)
def test_urls_that_cannot_be_read_are_refused_without_showing_them(key: str, url: str) -> None:
    with pytest.raises(ConfigError, match="not a valid URL") as refused:
        load_settings({key: url})
    assert "pa/ss99" not in str(refused.value)
    assert url not in str(refused.value)


SECRET = "S3cr3tZ"


@pytest.mark.parametrize(
    ("key", "url", "shown"),
    [
        (
            "DATABASE_URL",
            f"postgresql://db:5432/x?sslpassword={SECRET}&sslmode=require",
            "postgresql://db:5432/x?sslpassword=***&sslmode=require",
        ),
        (
            "DATABASE_URL",
            f"postgresql://me@db/x?password={SECRET}&token={SECRET}",
            "postgresql://me@db/x?password=***&token=***",
        ),
        (
            "DATABASE_URL",
            f"postgresql://me:{SECRET}@db1:5432,db2:5433/x?sslkey={SECRET}",
            "postgresql://me:***@db1:5432,db2:5433/x?sslkey=***",
        ),
        (
            "MDS_FEEDBACK_REDIS_URL",
            f"redis://r:6379/0?password={SECRET}",
            "redis://r:6379/0?password=***",
        ),
        (
            "MDS_FEEDBACK_REDIS_URL",
            f"unix:///run/redis.sock?db=0&password={SECRET}",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("MDS_FEEDBACK_REDIS_URL", f"redis://[::1]:6379?secret={SECRET}", None),
    ],
)
def test_credentials_in_queries_are_masked(key: str, url: str, shown: str | None) -> None:
    settings = load_settings({key: url})
    data = redacted(settings)
    assert SECRET not in str(data)
    if shown is not None:
        assert shown in str(data)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://me:pa/{SECRET}@db:5432/x",
        f"postgresql://me:pa#{SECRET}@db:5432/x",
        f"postgresql://me:pa?{SECRET}@db:5432/x",
        f"postgresql://me:pa@{SECRET}@db:5432/x",  # asyncpg splits at the first '@'
        f"postgresql://me:123/{SECRET}@db:5432/x",  # "port" 123 of host "me" reads
        f"postgresql://me:{SECRET}@db:abc/x",
        f"postgresql://me:{SECRET}@[::1/x",
        f"postgresql://me:{SECRET}@[::1]x/x",
        f"postgresql://me:{SECRET}@db:0/x",
        f"postgresql://me:{SECRET}@d b/x",
    ],
)
def test_malformed_urls_are_one_line_errors_naming_the_key_never_the_secret(url: str) -> None:
    for key, name in [
        ("DATABASE_URL", "database_url"),
        ("MDS_FEEDBACK_REDIS_URL", "feedback.redis.url"),
        ("MDS_FEEDBACK_WEBHOOK_URL", "feedback.webhook.url"),
    ]:
        scheme = {"DATABASE_URL": "postgresql", "MDS_FEEDBACK_REDIS_URL": "redis"}.get(key, "https")
        with pytest.raises(ConfigError) as refused:
            load_settings({key: url.replace("postgresql", scheme, 1)})
        message = str(refused.value)
        assert message.startswith(f"{name} (from {key}): not a valid URL"), message
        assert "\n" not in message
        assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://me:pa/ss#w?o@rd{SECRET}@db:5432/x", "postgresql://***@db:5432/x"),
        (f"redis://:pa#{SECRET}@r:6379/0", "redis://***@r:6379/0"),
        (f"https://u:p@ss/w{SECRET}@h:1/x?token=a", "https://***@h:1/x?token=***"),
        ("postgresql://u@/db?application_name=a@b", "postgresql://u@/db?application_name=a@b"),
        (f"https://h/x#{SECRET}", "https://h/x#…"),
    ],
)
def test_redact_url_masks_userinfo_up_to_the_last_at(url: str, shown: str) -> None:
    """What cannot be told apart is masked whole: a password with an unencoded '/',
    '#', '?' or '@' leaves urlsplit without a password."""
    assert redact_url(url) == shown
    assert redact_text(f"connect to {url} failed") == f"connect to {shown} failed"
