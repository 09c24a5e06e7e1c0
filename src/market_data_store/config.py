"""Settings: shipped defaults, then an optional file, then the environment.

Order (later wins):
1. ``default.toml`` shipped in the package (``config/default.toml`` in the
   repository): every key, documented;
2. the TOML file named by ``MDS_CONFIG``, if set;
3. environment variables ``MDS_<SECTION>_<KEY>`` (``MDS_COORDINATOR_CAPACITY``,
   ``MDS_FEEDBACK_WEBHOOK_URL``...); ``DATABASE_URL`` and ``ADMIN_TOKEN`` are
   also accepted without the prefix (the prefixed form wins).

A bad value refuses to load with a ``ConfigError`` naming the key, where the
value came from and the rule it breaks - never a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

log = logging.getLogger(__name__)

DEFAULTS_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "MDS_"
UNPREFIXED = {"DATABASE_URL": ("database_url",), "ADMIN_TOKEN": ("admin_token",)}
NOT_SETTINGS = ("MDS_CONFIG", "MDS_TEST_")

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
InstanceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class ServerSettings(_Section, kw_only=True, frozen=True):
    host: str
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    graceful_timeout: Seconds
    instance_id: InstanceId | None = None
    read_timeout: Seconds
    min_body_rate: NonNegative
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)]
    max_connections: Positive

    @property
    def resolved_instance_id(self) -> str:
        """This replica's name (default: the host name, a pod's name in Kubernetes)."""
        return self.instance_id or socket.gethostname() or "store"


class DatabaseSettings(_Section, kw_only=True, frozen=True):
    auto_migrate: bool
    embedded_dir: str
    pool_min_size: NonNegative
    pool_max_size: Positive
    connect_timeout: Seconds
    startup_timeout: Seconds
    command_timeout: Seconds
    health_interval: Seconds
    health_interval_failing: Seconds
    health_timeout: Seconds
    copy_fast_path: bool


class IngestSettings(_Section, kw_only=True, frozen=True):
    max_bars_per_request: Positive
    max_body_bytes: Positive
    commit_timeout: Seconds


class CoordinatorSettings(_Section, kw_only=True, frozen=True):
    capacity: Positive
    workers: Positive
    batch_size: Positive
    flush_interval: Seconds
    high_watermark: NonNegative | None = None
    low_watermark: NonNegative | None = None
    overflow_strategy: Literal["block", "drop_oldest", "error"]
    submit_timeout: NonNegativeSeconds
    drain_timeout: NonNegativeSeconds
    dead_letter_path: str

    @property
    def resolved_high_watermark(self) -> int:
        """The high watermark, defaulting to 80 % of capacity."""
        if self.high_watermark is not None:
            return self.high_watermark
        return max(1, int(0.8 * self.capacity))

    @property
    def resolved_batch_size(self) -> int:
        """Items per write: ``batch_size``, at most the whole queue."""
        return min(self.batch_size, self.capacity)

    @property
    def resolved_low_watermark(self) -> int:
        """The low watermark, defaulting to 50 % of capacity."""
        if self.low_watermark is not None:
            return self.low_watermark
        return min(int(0.5 * self.capacity), self.resolved_high_watermark - 1)


class RetrySettings(_Section, kw_only=True, frozen=True):
    max_attempts: Positive
    initial_backoff_ms: NonNegative
    max_backoff_ms: NonNegative
    backoff_multiplier: Annotated[float, msgspec.Meta(ge=1)]
    jitter: bool


class CircuitBreakerSettings(_Section, kw_only=True, frozen=True):
    failure_threshold: Positive
    half_open_after_sec: Seconds


class SseSettings(_Section, kw_only=True, frozen=True):
    enabled: bool
    heartbeat_sec: Seconds
    subscriber_queue: Positive
    send_timeout: Seconds
    history: Positive
    max_streams: Positive


class WebhookSettings(_Section, kw_only=True, frozen=True):
    url: str | None = None
    timeout: Seconds
    max_attempts: Positive
    queue_size: Positive


class RedisSettings(_Section, kw_only=True, frozen=True):
    url: str | None = None
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    queue_size: Positive
    timeout: Seconds


class FeedbackSettings(_Section, kw_only=True, frozen=True):
    sse: SseSettings
    webhook: WebhookSettings
    redis: RedisSettings


class Settings(_Section, kw_only=True, frozen=True):
    env: Literal["dev", "production"]
    admin_token: Annotated[str, msgspec.Meta(min_length=1)]
    database_url: str | None = None
    server: ServerSettings
    database: DatabaseSettings
    ingest: IngestSettings
    coordinator: CoordinatorSettings
    retry: RetrySettings
    circuit_breaker: CircuitBreakerSettings
    feedback: FeedbackSettings

    @property
    def admin_token_is_default(self) -> bool:
        return self.admin_token == DEFAULT_ADMIN_TOKEN


DEFAULT_ADMIN_TOKEN = "changeme"


class ConfigError(Exception):
    """Configuration that cannot be used; the message names key, source and rule."""


@dataclass
class _Sources:
    """Where each dotted key's value came from, for error messages."""

    by_key: dict[str, str]

    def describe(self, key: str) -> str:
        source = self.by_key.get(key)
        return f" (from {source})" if source else ""


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | os.PathLike[str] | None = None
) -> Settings:
    """Build the settings from defaults, ``MDS_CONFIG``/``config_file`` and ``environ``."""
    environ = os.environ if environ is None else environ
    sources = _Sources({})
    data: dict[str, Any] = {}
    _merge(data, _read_toml(DEFAULTS_FILE), lambda _: DEFAULTS_FILE.name, sources, ())
    path = config_file if config_file is not None else environ.get("MDS_CONFIG")
    if path:
        _merge(data, _read_toml(Path(path)), lambda _: str(path), sources, ())
    env_data, env_sources = _from_environ(environ)
    _merge(data, env_data, env_sources.__getitem__, sources, ())
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), data, sources)) from None
    _check_rules(settings, sources)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = msgspec.toml.decode(path.read_bytes(), type=dict[str, Any])
        return data
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(
    into: dict[str, Any],
    overlay: Mapping[str, Any],
    source_of: Callable[[str], str],
    sources: _Sources,
    prefix: tuple[str, ...],
) -> None:
    for key, value in overlay.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, source_of, sources, path)
            continue
        into[key] = dict(value) if isinstance(value, Mapping) else value
        dotted = ".".join(path)
        sources.by_key[dotted] = source_of(dotted)


def _from_environ(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested dict of the settings given as environment variables, and their names."""
    out: dict[str, Any] = {}
    found: dict[tuple[str, ...], tuple[str, str]] = {}
    for name, value in environ.items():
        if name in UNPREFIXED and value:
            found.setdefault(UNPREFIXED[name], (name, value))
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(NOT_SETTINGS):
            continue
        if not value:  # VAR= in a compose file or ConfigMap means "not set"
            continue
        path = _env_path(name[len(ENV_PREFIX) :].lower(), Settings)
        if path is None:
            log.warning("environment variable %s does not name a setting; ignored", name)
            continue
        found[path] = (name, value)  # prefixed wins over unprefixed
    names: dict[str, str] = {}
    for path, (name, value) in found.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        names[".".join(path)] = name
    return out, names


def _env_path(rest: str, struct: type[msgspec.Struct]) -> tuple[str, ...] | None:
    """Map ``coordinator_high_watermark`` to ``("coordinator", "high_watermark")``."""
    hints = get_type_hints(struct, include_extras=True)
    for field in struct.__struct_fields__:
        kind = hints[field]
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            if rest.startswith(field + "_"):
                sub = _env_path(rest[len(field) + 1 :], kind)
                if sub is not None:
                    return (field, *sub)
        elif rest == field:
            return (field,)
    return None


def _explain(message: str, data: Mapping[str, Any], sources: _Sources) -> str:
    """Turn msgspec's ``Expected ... - at `$.a.b``` into ``a.b = v (from X): expected ...``."""
    rule, _, where = message.partition(" - at ")
    key = where.strip("`").removeprefix("$").lstrip(".")
    if rule.startswith("Object contains unknown field"):
        unknown = rule.split("`")[1]
        full = f"{key}.{unknown}" if key else unknown
        return f"{full}{sources.describe(full)}: unknown setting"
    if rule.startswith("Object missing required field"):
        missing = rule.split("`")[1]
        full = f"{key}.{missing}" if key else missing
        return f"{full}: required setting is missing"
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    rule = rule[0].lower() + rule[1:] if rule else rule
    shown = f" = {value!r}" if value is not None and not isinstance(value, Mapping) else ""
    return f"{key}{shown}{sources.describe(key)}: {rule}"


def _check_rules(s: Settings, sources: _Sources) -> None:
    """Rules spanning several keys, or beyond what a type can say."""
    c = s.coordinator
    high, low = c.resolved_high_watermark, c.resolved_low_watermark
    problems: list[str] = []
    if not s.admin_token.strip():
        problems.append(
            f"admin_token = {s.admin_token!r}{sources.describe('admin_token')}: must not be blank"
        )
    if high > c.capacity:
        problems.append(
            f"coordinator.high_watermark ({high}) must not exceed coordinator.capacity "
            f"({c.capacity})"
        )
    if low >= high:
        problems.append(
            f"coordinator.low_watermark ({low}) must be below coordinator.high_watermark ({high})"
        )
    if c.overflow_strategy == "error" and s.ingest.max_bars_per_request > c.capacity:
        problems.append(
            f"ingest.max_bars_per_request ({s.ingest.max_bars_per_request}) must not exceed "
            f"coordinator.capacity ({c.capacity}) with overflow_strategy 'error': a larger "
            "request could only ever enter an empty queue"
        )
    d = s.database
    if d.pool_min_size > d.pool_max_size:
        problems.append(
            f"database.pool_min_size ({d.pool_min_size}) must not exceed database.pool_max_size "
            f"({d.pool_max_size})"
        )
    if d.health_timeout > d.health_interval:
        problems.append(
            f"database.health_timeout ({d.health_timeout}) must not exceed "
            f"database.health_interval ({d.health_interval})"
        )
    sse = s.feedback.sse
    if sse.enabled and sse.max_streams >= s.server.max_connections:
        problems.append(
            f"feedback.sse.max_streams ({sse.max_streams}) must be below "
            f"server.max_connections ({s.server.max_connections}): every stream holds a "
            "connection, and API clients need some too"
        )
    r = s.retry
    if r.max_backoff_ms < r.initial_backoff_ms:
        problems.append(
            f"retry.max_backoff_ms ({r.max_backoff_ms}) must be at least "
            f"retry.initial_backoff_ms ({r.initial_backoff_ms})"
        )
    schemes = {
        "database_url": (s.database_url, ("postgres://", "postgresql://")),
        "feedback.webhook.url": (s.feedback.webhook.url, ("http://", "https://")),
        "feedback.redis.url": (s.feedback.redis.url, ("redis://", "rediss://", "unix://")),
    }
    for key, (url, allowed) in schemes.items():
        if url is None:
            continue
        if not url.startswith(allowed):
            problems.append(f"{key}{sources.describe(key)}: must start with {' or '.join(allowed)}")
        elif not _host_and_port_parse(url):
            # the URL is not shown: a password with '/' or '#' in it ends up in the "host"
            problems.append(
                f"{key}{sources.describe(key)}: not a valid URL (host or port cannot be "
                "read; percent-encode special characters in the password)"
            )
    if problems:
        raise ConfigError("; ".join(problems))


def _host_and_port_parse(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return parts.scheme == "unix" or bool(parts.hostname) or parts.scheme.startswith("postgres")


def endpoint_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, for logs: paths and queries of webhooks often
    carry a secret (Slack-style ``/services/T0/B0/<secret>``, ``?token=``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    rest = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets masked (for logs and ``mds-store config``)."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    data["admin_token"] = "<default>" if settings.admin_token_is_default else "<set>"
    if settings.database_url:
        data["database_url"] = redact_url(settings.database_url)
    if settings.feedback.webhook.url:
        data["feedback"]["webhook"]["url"] = endpoint_origin(settings.feedback.webhook.url)
    if settings.feedback.redis.url:
        data["feedback"]["redis"]["url"] = redact_url(settings.feedback.redis.url)
    return data


def redact_url(url: str) -> str:
    """``url`` with its password masked (in the authority and a ``password=`` query)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = urlencode(
            [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)],
            safe="/:*@",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable URL>"


__all__ = [
    "DEFAULTS_FILE",
    "CircuitBreakerSettings",
    "ConfigError",
    "CoordinatorSettings",
    "DatabaseSettings",
    "FeedbackSettings",
    "IngestSettings",
    "RedisSettings",
    "RetrySettings",
    "ServerSettings",
    "Settings",
    "SseSettings",
    "WebhookSettings",
    "endpoint_origin",
    "load_settings",
    "redact_url",
    "redacted",
]
