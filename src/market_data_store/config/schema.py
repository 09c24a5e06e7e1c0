"""The settings' shape: one frozen Struct per section, with the values they resolve
(``resolved_*``); ``ConfigError``, the one error that refuses a configuration, and
``_Sources``, where each value came from, for its messages.

Types carry the rules of one key (ranges, enums, patterns); rules across keys are in
``rules``, URL checks in ``redaction``.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
WEEK = 7 * 24 * 3600.0  # no wait of the service is meant to be longer (nor inf, nor nan)
Seconds = Annotated[float, msgspec.Meta(gt=0, le=WEEK)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, le=WEEK)]
ID_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
"""An instance id, and each part of a coordinator id (``<instance>/<name>``), local or
another replica's (``feedback.wire`` holds remote ids to it)."""
InstanceId = Annotated[str, msgspec.Meta(pattern=rf"^{ID_PART}\Z")]  # \Z: no "id\n"
TenantId = Annotated[str, msgspec.Meta(pattern=rf"^{ID_PART}\Z")]
"""A tenant's id, by the same rule (the database bounds its length only:
``bars_tenant_id_length``; rows get their tenant from here)."""
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Share = Annotated[float, msgspec.Meta(gt=0, le=1)]


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
        """This replica's name (default: the host name, a pod's name in Kubernetes),
        always by the id rule (``ID_PART``): a host name that breaks it has its other
        characters made ``-`` and is cut to 63, since every other replica refuses
        events whose coordinator id breaks it."""
        if self.instance_id:
            return self.instance_id
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")[:63]
        return host or "store"


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
    tenant_share: Share
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
    max_streams_per_client: Positive


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


class AuthSettings(_Section, kw_only=True, frozen=True):
    tenants: dict[TenantId, Token | list[Token]] = msgspec.field(default_factory=dict)

    @property
    def resolved_tenants(self) -> dict[str, tuple[str, ...]]:
        """Each tenant's tokens (one or several: a rotation), as configured."""
        return {
            tenant: (tokens,) if isinstance(tokens, str) else tuple(tokens)
            for tenant, tokens in self.tenants.items()
        }


class ReadsSettings(_Section, kw_only=True, frozen=True):
    max_exports: Positive
    export_timeout: Seconds


Retention = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,5}[smhdw]\Z")]
"""How long rows are kept: a count and a unit (s, m, h, d, w), e.g. ``365d``."""


class RetentionSettings(_Section, kw_only=True, frozen=True):
    bars: Retention | None = None
    options: Retention | None = None
    quotes: Retention | None = None
    trades: Retention | None = None
    fundamentals: Retention | None = None
    news: Retention | None = None
    batch_rows: Positive
    max_seconds: Seconds


class Settings(_Section, kw_only=True, frozen=True):
    env: Literal["dev", "production"]
    admin_token: Annotated[str, msgspec.Meta(min_length=1)]
    database_url: str | None = None
    auth: AuthSettings
    server: ServerSettings
    database: DatabaseSettings
    ingest: IngestSettings
    coordinator: CoordinatorSettings
    retry: RetrySettings
    circuit_breaker: CircuitBreakerSettings
    feedback: FeedbackSettings
    reads: ReadsSettings
    retention: RetentionSettings

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
