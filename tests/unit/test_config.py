"""Settings: defaults, file and environment layering; clear refusals."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import msgspec
import pytest

from market_data_store.config import (
    DEFAULTS_FILE,
    ConfigError,
    Settings,
    load_settings,
    redact_text,
    redact_url,
    redacted,
)


def test_defaults() -> None:
    s = load_settings({})
    assert s.env == "dev"
    assert s.admin_token == "changeme"
    assert s.admin_token_is_default
    assert s.database_url is None
    c = s.coordinator
    assert (c.capacity, c.workers, c.batch_size, c.flush_interval) == (10_000, 4, 5000, 0.25)
    assert (c.resolved_high_watermark, c.resolved_low_watermark) == (8_000, 5_000)
    assert c.overflow_strategy == "block"


def test_repository_config_dir_holds_the_shipped_defaults() -> None:
    repo_copy = Path(__file__).parents[2] / "config" / "default.toml"
    assert repo_copy.read_bytes() == DEFAULTS_FILE.read_bytes()


def _leaf_keys(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for f in msgspec.structs.fields(struct):
        kind = f.type
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            keys += _leaf_keys(kind, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_every_setting_is_documented_in_default_toml() -> None:
    text = DEFAULTS_FILE.read_text()
    lines = text.splitlines()
    for key in _leaf_keys(Settings):
        section, _, name = key.rpartition(".")
        header = f"[{section}]" if section else None
        start = lines.index(header) + 1 if header else 0
        body = lines[start:]
        end = next((i for i, ln in enumerate(body) if ln.startswith("[")), len(body))
        idx = next((i for i, ln in enumerate(body[:end]) if re.match(rf"#? ?{name} = ", ln)), None)
        assert idx is not None, f"{key} missing from default.toml"
        assert body[idx - 1].startswith("#"), f"{key} has no comment above it"


def test_file_then_environment_layering(tmp_path: Path) -> None:
    cfg = tmp_path / "mds.toml"
    cfg.write_text('[coordinator]\ncapacity = 2000\nworkers = 2\n[feedback.redis]\nchannel = "x"\n')
    s = load_settings({"MDS_CONFIG": str(cfg), "MDS_COORDINATOR_WORKERS": "8"})
    assert s.coordinator.capacity == 2000  # from the file
    assert s.coordinator.workers == 8  # the environment wins over the file
    assert s.coordinator.batch_size == 5000  # untouched default...
    assert s.coordinator.resolved_batch_size == 2000  # ...at most the capacity
    assert s.feedback.redis.channel == "x"
    assert s.coordinator.resolved_high_watermark == 1600


def test_environment_reaches_nested_sections_and_converts_types() -> None:
    s = load_settings(
        {
            "MDS_FEEDBACK_WEBHOOK_URL": "https://hooks.example/feedback",
            "MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "2.5",
            "MDS_RETRY_JITTER": "false",
            "MDS_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "9",
            "MDS_COORDINATOR_OVERFLOW_STRATEGY": "drop_oldest",
            "MDS_ENV": "production",
            "MDS_ADMIN_TOKEN": "t" * 32,
        }
    )
    assert s.feedback.webhook.url == "https://hooks.example/feedback"
    assert s.feedback.sse.heartbeat_sec == 2.5
    assert s.retry.jitter is False
    assert s.circuit_breaker.failure_threshold == 9
    assert s.coordinator.overflow_strategy == "drop_oldest"
    assert s.env == "production"


def test_unprefixed_database_url_and_admin_token() -> None:
    s = load_settings({"DATABASE_URL": "postgresql://u:secret@db/x", "ADMIN_TOKEN": "t0k"})
    assert s.database_url == "postgresql://u:secret@db/x"
    assert s.admin_token == "t0k"
    both = load_settings({"ADMIN_TOKEN": "plain", "MDS_ADMIN_TOKEN": "prefixed"})
    assert both.admin_token == "prefixed"


def test_unknown_environment_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    load_settings({"MDS_COORDINATOR_CAPACTY": "5", "MDS_TEST_DATABASE_URL": "x"})
    assert "MDS_COORDINATOR_CAPACTY does not name a setting" in caplog.text
    assert "MDS_TEST_DATABASE_URL" not in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "MDS_COORDINATOR_CAPACITY": "1000",
                "MDS_COORDINATOR_HIGH_WATERMARK": "800",
                "MDS_COORDINATOR_LOW_WATERMARK": "900",
            },
            "coordinator.low_watermark (900) must be below coordinator.high_watermark (800)",
        ),
        (
            {"MDS_COORDINATOR_CAPACITY": "100", "MDS_COORDINATOR_HIGH_WATERMARK": "200"},
            "coordinator.high_watermark (200) must not exceed coordinator.capacity (100)",
        ),
        (
            {"MDS_COORDINATOR_CAPACITY": "abc"},
            "coordinator.capacity = 'abc' (from MDS_COORDINATOR_CAPACITY): expected `int`",
        ),
        (
            {"MDS_COORDINATOR_WORKERS": "0"},
            "coordinator.workers = '0' (from MDS_COORDINATOR_WORKERS): expected `int` >= 1",
        ),
        (
            {"MDS_COORDINATOR_OVERFLOW_STRATEGY": "maybe"},
            "coordinator.overflow_strategy = 'maybe' (from MDS_COORDINATOR_OVERFLOW_STRATEGY)",
        ),
        (
            {"MDS_RETRY_INITIAL_BACKOFF_MS": "100", "MDS_RETRY_MAX_BACKOFF_MS": "10"},
            "retry.max_backoff_ms (10) must be at least retry.initial_backoff_ms (100)",
        ),
        (
            {"MDS_FEEDBACK_WEBHOOK_URL": "ftp://x"},
            "feedback.webhook.url (from MDS_FEEDBACK_WEBHOOK_URL): must start with http://",
        ),
        ({"DATABASE_URL": "mysql://x"}, "database_url (from DATABASE_URL): must start with"),
        ({"MDS_ENV": "staging"}, "env = 'staging' (from MDS_ENV): invalid enum value"),
        ({"MDS_ADMIN_TOKEN": " "}, "admin_token (from MDS_ADMIN_TOKEN): must not be blank"),
        (
            {"MDS_ENV": "staging"},
            "env = 'staging' (from MDS_ENV): invalid enum value 'staging' "
            "(accepted: 'dev', 'production')",
        ),
        (
            {"MDS_COORDINATOR_OVERFLOW_STRATEGY": "drop"},
            "(accepted: 'block', 'drop_oldest', 'error')",
        ),
        (
            {"MDS_RETRY_JITTER": "yes"},
            "retry.jitter = 'yes' (from MDS_RETRY_JITTER): expected `bool`, got `str` "
            "(accepted: true, false, 1, 0)",
        ),
    ],
)
def test_bad_values_name_key_source_and_rule(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert message in str(info.value)
    assert "Traceback" not in str(info.value)


def test_bad_file_contents_are_reported_with_the_file(tmp_path: Path) -> None:
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("[coordinator]\ncapasity = 5\n")
    with pytest.raises(ConfigError, match=r"coordinator\.capasity \(from .*a\.toml\): unknown"):
        load_settings({"MDS_CONFIG": str(bad_key)})

    bad_value = tmp_path / "b.toml"
    bad_value.write_text("[coordinator]\nflush_interval = 0\n")
    with pytest.raises(ConfigError, match=r"flush_interval = 0 \(from .*b\.toml\): expected"):
        load_settings({}, config_file=bad_value)

    broken = tmp_path / "c.toml"
    broken.write_text("[coordinator\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"MDS_CONFIG": str(broken)})

    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"MDS_CONFIG": str(tmp_path / "missing.toml")})

    with pytest.raises(ConfigError, match="cannot be read: Is a directory"):
        load_settings({"MDS_CONFIG": str(tmp_path)})

    not_utf8 = tmp_path / "d.toml"
    not_utf8.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"MDS_CONFIG": str(not_utf8)})

    forever = tmp_path / "e.toml"
    for value in ("inf", "nan", "1e308"):
        forever.write_text(f"[server]\ngraceful_timeout = {value}\n")
        with pytest.raises(ConfigError, match=r"graceful_timeout = .* expected"):
            load_settings({"MDS_CONFIG": str(forever)})


def test_empty_variables_mean_not_set() -> None:
    s = load_settings(
        {"DATABASE_URL": "", "MDS_COORDINATOR_HIGH_WATERMARK": "", "MDS_FEEDBACK_WEBHOOK_URL": ""}
    )
    assert s.database_url is None
    assert s.coordinator.high_watermark is None
    assert s.feedback.webhook.url is None


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


def test_error_strategy_needs_requests_that_fit_the_queue() -> None:
    with pytest.raises(ConfigError, match=r"ingest.max_bars_per_request \(50000\) must not exceed"):
        load_settings({"MDS_COORDINATOR_OVERFLOW_STRATEGY": "error"})
    ok = load_settings(
        {"MDS_COORDINATOR_OVERFLOW_STRATEGY": "error", "MDS_INGEST_MAX_BARS_PER_REQUEST": "10000"}
    )
    assert ok.coordinator.overflow_strategy == "error"


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


def test_unknown_keys_suggest_the_nearest_known_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text("[coordinator]\ncapasity = 5\n")
    with pytest.raises(ConfigError, match=r"did you mean coordinator\.capacity\?"):
        load_settings({}, config_file=toml)
    toml.write_text("[feedback.redis]\nchanel = 'x'\n")
    with pytest.raises(ConfigError, match=r"did you mean feedback\.redis\.channel\?"):
        load_settings({}, config_file=toml)
    load_settings({"MDS_COORDINATOR_CAPACTY": "5", "MDS_XYZZY": "1"})
    assert "(did you mean MDS_COORDINATOR_CAPACITY?)" in caplog.text
    assert "MDS_XYZZY does not name a setting; ignored\n" in caplog.text + "\n"


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
