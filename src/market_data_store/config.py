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

import difflib
import logging
import os
import re
import socket
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints
from urllib.parse import unquote

import msgspec

log = logging.getLogger(__name__)

DEFAULTS_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "MDS_"
UNPREFIXED = {"DATABASE_URL": ("database_url",), "ADMIN_TOKEN": ("admin_token",)}
NOT_SETTINGS = ("MDS_CONFIG", "MDS_TEST_")

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
WEEK = 7 * 24 * 3600.0  # no wait of the service is meant to be longer (nor inf, nor nan)
Seconds = Annotated[float, msgspec.Meta(gt=0, le=WEEK)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, le=WEEK)]
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
    except OSError as exc:  # a directory, no permission...
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
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
            log.warning(
                "environment variable %s does not name a setting; ignored%s",
                name,
                _did_you_mean(name, [_env_name(key) for key in setting_keys()]),
            )
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


def setting_keys(struct: type[msgspec.Struct] | None = None, prefix: str = "") -> list[str]:
    """Every setting's dotted key (``coordinator.capacity``...)."""
    hints = get_type_hints(struct or Settings, include_extras=True)
    struct = struct or Settings
    keys: list[str] = []
    for field in struct.__struct_fields__:
        kind = hints[field]
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            keys += setting_keys(kind, f"{prefix}{field}.")
        else:
            keys.append(prefix + field)
    return keys


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _did_you_mean(wrong: str, known: list[str]) -> str:
    close = difflib.get_close_matches(wrong, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _field_type(key: str) -> Any:
    """The declared type of the setting ``key`` (``None`` if it names none)."""
    node: Any = Settings
    for part in key.split("."):
        if not (isinstance(node, type) and issubclass(node, msgspec.Struct)):
            return None
        node = get_type_hints(node, include_extras=True).get(part)
    return node


def _accepted_values(kind: Any) -> str:
    """``: one of 'a', 'b'`` for enums, the accepted spellings for booleans."""
    while typing.get_origin(kind) is Annotated:
        kind = typing.get_args(kind)[0]
    if kind is bool:
        return " (accepted: true, false, 1, 0)"
    if typing.get_origin(kind) is Literal:
        return f" (accepted: {', '.join(repr(v) for v in typing.get_args(kind))})"
    return ""


def _explain(message: str, data: Mapping[str, Any], sources: _Sources) -> str:
    """Turn msgspec's ``Expected ... - at `$.a.b``` into ``a.b = v (from X): expected ...``."""
    rule, _, where = message.partition(" - at ")
    key = where.strip("`").removeprefix("$").lstrip(".")
    if rule.startswith("Object contains unknown field"):
        unknown = rule.split("`")[1]
        full = f"{key}.{unknown}" if key else unknown
        hint = _did_you_mean(full, setting_keys())
        return f"{full}{sources.describe(full)}: unknown setting{hint}"
    if rule.startswith("Object missing required field"):
        missing = rule.split("`")[1]
        full = f"{key}.{missing}" if key else missing
        return f"{full}: required setting is missing"
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    rule = rule[0].lower() + rule[1:] if rule else rule
    shown = f" = {value!r}" if value is not None and not isinstance(value, Mapping) else ""
    if key in _URL_KEYS or key == "admin_token":
        shown = ""  # may be (part of) a secret
    return f"{key}{shown}{sources.describe(key)}: {rule}{_accepted_values(_field_type(key))}"


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


# -- URLs: validated at load, never shown with a credential ---------------------------

_URL_KEYS: dict[str, tuple[str, ...]] = {
    "database_url": ("postgres", "postgresql"),
    "feedback.webhook.url": ("http", "https"),
    "feedback.redis.url": ("redis", "rediss", "unix"),
}
# query parameters that may carry a credential (password=, sslpassword=, token=,
# access_token=, secret=, api_key=, sig=...): their values are masked
_SECRET_PARAMETER = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred", re.IGNORECASE)
_HOST = re.compile(r"[A-Za-z0-9._%~-]*")


def _urls(s: Settings) -> Iterator[tuple[str, str | None]]:
    yield "database_url", s.database_url
    yield "feedback.webhook.url", s.feedback.webhook.url
    yield "feedback.redis.url", s.feedback.redis.url


@dataclass(frozen=True)
class _UrlParts:
    """A URL cut where a reader would cut it, whatever the password holds."""

    scheme: str
    userinfo: str | None  # up to the last '@' before the query's first value
    authority: str  # host[:port][,host[:port]...]
    path: str
    query: str | None
    fragment: str | None

    @classmethod
    def of(cls, url: str) -> _UrlParts | None:
        scheme, sep, rest = url.partition("://")
        if not sep:
            return None
        # the userinfo ends at the last '@' - but an '@' in a query value is data
        question = rest.find("?")
        equals = rest.find("=", question) if question != -1 else -1
        at = rest.rfind("@", 0, equals if equals != -1 else len(rest))
        userinfo = rest[:at] if at != -1 else None
        rest = rest[at + 1 :]
        rest, hash_, fragment = rest.partition("#")
        rest, question_mark, query = rest.partition("?")
        authority, slash, path = rest.partition("/")
        return cls(
            scheme.lower(),
            userinfo,
            authority,
            slash + path,
            query if question_mark else None,
            fragment if hash_ else None,
        )

    def shown_userinfo(self) -> str:
        if self.userinfo is None:
            return ""
        user, colon, _ = self.userinfo.partition(":")
        if any(c in self.userinfo for c in "/?#@"):
            return "***@"  # cannot tell user from password: hide it all
        return f"{user}:***@" if colon else f"{user}@"


def _url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` cannot be used (never quoting it), or None."""
    parts = _UrlParts.of(url)
    if parts is None or parts.scheme not in schemes:
        return f"must start with {' or '.join(f'{x}://' for x in schemes)}"
    if parts.userinfo is not None and any(c in parts.userinfo for c in "/?#@"):
        return (
            "not a valid URL: the user name or password holds '/', '?', '#' or '@'; "
            "percent-encode them (%2F, %3F, %23, %40)"
        )
    if parts.fragment is not None and parts.scheme != "https" and parts.scheme != "http":
        return "not a valid URL: '#' is not allowed here; percent-encode it (%23)"
    if parts.scheme == "unix":
        return None if parts.path not in ("", "/") else "not a valid URL: no socket path"
    hosts = parts.authority.split(",") if parts.scheme.startswith("postgres") else [parts.authority]
    for host in hosts:
        if problem := _host_problem(host, required=not parts.scheme.startswith("postgres")):
            return f"not a valid URL: {problem}"
    return None


def _host_problem(hostport: str, *, required: bool) -> str | None:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            return "an IPv6 address lacks its closing ']'"
        host, after = hostport[1:end], hostport[end + 1 :]
        if not re.fullmatch(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?", host):
            return "the IPv6 address between '[' and ']' is not one"
        if after and not after.startswith(":"):
            return "unexpected text after ']'"
        port = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if not _HOST.fullmatch(host):
            return "the host name holds characters a host name cannot (percent-encode them)"
    if required and not host:
        return "no host"
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        # not shown: when the URL is misread, the "port" is part of a password
        return "the port is not a number from 1 to 65535"
    return None


def _mask_query(query: str) -> str:
    out = []
    for item in query.split("&"):
        name, equals, _ = item.partition("=")
        out.append(f"{name}=***" if equals and _SECRET_PARAMETER.search(unquote(name)) else item)
    return "&".join(out)


def endpoint_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, for logs: paths and queries of webhooks often
    carry a secret (Slack-style ``/services/T0/B0/<secret>``, ``?token=``)."""
    parts = _UrlParts.of(url)
    if parts is None:
        return "<not a URL>"
    rest = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{parts.authority}{rest}"


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
    """``url`` with whatever may be a credential masked: the password (all the userinfo
    when a special character in it makes user and password hard to tell apart), the
    values of ``password=``, ``sslpassword=``, ``token=``, ``secret=``, ``*key*``...
    query parameters, and any fragment."""
    parts = _UrlParts.of(url)
    if parts is None:
        return "<not a URL>"
    query = f"?{_mask_query(parts.query)}" if parts.query is not None else ""
    fragment = "#…" if parts.fragment else ""
    return (
        f"{parts.scheme}://{parts.shown_userinfo()}{parts.authority}{parts.path}{query}{fragment}"
    )


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_text(text: str) -> str:
    """``text`` (an error message) with every URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


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
    "check_admin_token",
    "endpoint_origin",
    "load_settings",
    "redact_text",
    "redact_url",
    "redacted",
    "setting_keys",
]
