"""Rules spanning several keys, or beyond what a type can say (the admin token's, the
URLs'), checked once the settings have their types: every problem found is reported,
joined in one ``ConfigError``."""

from __future__ import annotations

from .redaction import _URL_KEYS, _url_problem, _urls
from .schema import ConfigError, Settings, _Sources


def _check_rules(s: Settings, sources: _Sources) -> None:
    """Rules spanning several keys, or beyond what a type can say."""
    c = s.coordinator
    high, low = c.resolved_high_watermark, c.resolved_low_watermark
    problems: list[str] = _admin_token_problems(s, sources)
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
    for key, url in _urls(s):
        if url is not None and (problem := _url_problem(url, _URL_KEYS[key])):
            # the URL itself is never shown: it may hold a password
            problems.append(f"{key}{sources.describe(key)}: {problem}")
    if problems:
        raise ConfigError("; ".join(problems))


MIN_PRODUCTION_TOKEN = 32
GENERATE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_admin_token(settings: Settings) -> None:
    """Raise ``ConfigError`` unless the admin token suits ``settings.env`` (the rule
    ``load_settings`` applies, for settings built another way)."""
    if problems := _admin_token_problems(settings, _Sources({})):
        raise ConfigError("; ".join(problems))


def _admin_token_problems(s: Settings, sources: _Sources) -> list[str]:
    """Any env: printable ASCII (a header carries bytes: a token of other characters
    cannot be compared reliably with what clients send). Production: no default, at
    least ``MIN_PRODUCTION_TOKEN`` characters."""
    token, where = s.admin_token, sources.describe("admin_token")
    if not token.strip():
        return [f"admin_token{where}: must not be blank"]
    if not (token.isascii() and token.isprintable()) or token != token.strip():
        return [
            f"admin_token{where}: must be printable ASCII without leading or trailing "
            f"spaces (generate one with: {GENERATE_TOKEN})"
        ]
    if s.env != "production":
        return []
    if s.admin_token_is_default:
        return [
            "env is production but admin_token is still the default; set ADMIN_TOKEN "
            f"(or MDS_ADMIN_TOKEN) to a secret, e.g. the output of: {GENERATE_TOKEN}"
        ]
    if len(token) < MIN_PRODUCTION_TOKEN:
        return [
            f"admin_token{where}: env is production and the token has {len(token)} characters;"
            f" at least {MIN_PRODUCTION_TOKEN} are required (generate one with: "
            f"{GENERATE_TOKEN})"
        ]
    return []
