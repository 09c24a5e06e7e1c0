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
    problems: list[str] = _admin_token_problems(s, sources) + _tenant_problems(s, sources)
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
    readers = d.pool_max_size - c.workers - 1 - s.reads.max_exports
    if readers < 1:
        problems.append(
            f"database.pool_max_size ({d.pool_max_size}) must exceed coordinator.workers "
            f"({c.workers}) + reads.max_exports ({s.reads.max_exports}) + 1: the writers, "
            "the exports and the admin calls each need their connections, and the other "
            "reads at least one"
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
    where = sources.describe("admin_token")
    if s.env == "production" and s.admin_token_is_default:
        return [
            "env is production but admin_token is still the default; set ADMIN_TOKEN "
            f"(or MDS_ADMIN_TOKEN) to a secret, e.g. the output of: {GENERATE_TOKEN}"
        ]
    problem = _token_problem(s.admin_token, s.env)
    return [f"admin_token{where}: {problem}"] if problem else []


def _tenant_problems(s: Settings, sources: _Sources) -> list[str]:
    """Each tenant's tokens by the admin token's rules; a token names one tenant only,
    and never is the admin token. Tokens are never shown: tenants and positions are."""
    where = sources.describe("auth.tenants")
    problems: list[str] = []
    owner: dict[str, str] = {}
    for tenant, tokens in s.auth.resolved_tenants.items():
        if not tokens:
            problems.append(f"auth.tenants.{tenant}{where}: has no token")
        for index, token in enumerate(tokens):
            name = f"auth.tenants.{tenant}" + (f"[{index}]" if len(tokens) > 1 else "")
            if problem := _token_problem(token, s.env):
                problems.append(f"{name}{where}: {problem}")
            elif token == s.admin_token:
                problems.append(f"{name}{where}: must not be the admin token")
            elif owner.setdefault(token, tenant) != tenant:
                problems.append(f"{name}{where}: is also a token of tenant {owner[token]}")
            elif tokens.index(token) != index:
                problems.append(f"{name}{where}: is listed twice")
    return problems


def _token_problem(token: str, env: str) -> str | None:
    """Why a bearer token cannot be used in ``env``, or None."""
    if not token.strip():
        return "must not be blank"
    if not (token.isascii() and token.isprintable()) or token != token.strip():
        return (
            "must be printable ASCII without leading or trailing spaces "
            f"(generate one with: {GENERATE_TOKEN})"
        )
    if env == "production" and len(token) < MIN_PRODUCTION_TOKEN:
        return (
            f"env is production and the token has {len(token)} characters; at least "
            f"{MIN_PRODUCTION_TOKEN} are required (generate one with: {GENERATE_TOKEN})"
        )
    return None
