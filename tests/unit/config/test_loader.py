"""Settings: defaults, file and environment layering; clear refusals."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from market_data_store.config import DEFAULTS_FILE, ConfigError, Settings, load_settings


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
    repo_copy = Path(__file__).parents[3] / "config" / "default.toml"
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
    s = load_settings({"MDS_CONFIG": str(cfg), "MDS_COORDINATOR_WORKERS": "6"})
    assert s.coordinator.capacity == 2000  # from the file
    assert s.coordinator.workers == 6  # the environment wins over the file
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
