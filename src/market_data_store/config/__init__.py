"""Settings: shipped defaults, then an optional file, then the environment (``loader``).

``schema`` holds the section Structs and ``ConfigError``; ``rules`` the checks across keys
(the admin token's among them); ``redaction`` URL validation and masking for logs.
"""

from .loader import DEFAULTS_FILE, load_settings, setting_keys
from .loader import ENV_PREFIX as ENV_PREFIX
from .loader import UNPREFIXED as UNPREFIXED
from .loader import _env_path as _env_path
from .redaction import (
    SecretsFilter,
    endpoint_origin,
    guard_logging,
    redact_text,
    redact_url,
    redacted,
)
from .rules import check_admin_token
from .schema import (
    CircuitBreakerSettings,
    ConfigError,
    CoordinatorSettings,
    DatabaseSettings,
    FeedbackSettings,
    IngestSettings,
    RedisSettings,
    RetrySettings,
    ServerSettings,
    Settings,
    SseSettings,
    WebhookSettings,
)

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
    "SecretsFilter",
    "ServerSettings",
    "Settings",
    "SseSettings",
    "WebhookSettings",
    "check_admin_token",
    "endpoint_origin",
    "guard_logging",
    "load_settings",
    "redact_text",
    "redact_url",
    "redacted",
    "setting_keys",
]
