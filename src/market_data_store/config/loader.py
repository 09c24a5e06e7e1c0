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
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import msgspec

from .redaction import _URL_KEYS
from .rules import _check_rules
from .schema import ConfigError, Settings, _Sources

# the logger's name from before config became a package: log filters may name it
log = logging.getLogger("market_data_store.config")

DEFAULTS_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "MDS_"
UNPREFIXED = {"DATABASE_URL": ("database_url",), "ADMIN_TOKEN": ("admin_token",)}
NOT_SETTINGS = ("MDS_CONFIG", "MDS_TEST_")


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
    if env_data.get("auth", {}).get("tenants") == {} and data.get("auth", {}).get("tenants"):
        # "{}" would silently turn the file's tenants (and every token check) off
        raise ConfigError(
            f"{env_sources['auth.tenants']} is an empty object while "
            f"{sources.by_key.get('auth.tenants', 'the config file')} defines tenants: "
            "give the tenants in one place (unset the variable to use the file's)"
        )
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
        dotted = ".".join(path)
        whole = dotted in _JSON_KEYS
        if isinstance(value, Mapping) and isinstance(into.get(key), dict) and not whole:
            _merge(into[key], value, source_of, sources, path)
            continue
        # a table of tenants is taken whole: the environment's (JSON) replaces the file's
        into[key] = dict(value) if isinstance(value, Mapping) else value
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
        dotted = ".".join(path)
        node[path[-1]] = _json_object(name, value) if dotted in _JSON_KEYS else value
        names[dotted] = name
    return out, names


_JSON_KEYS = ("auth.tenants",)
"""Tables given in the environment as a JSON object."""


def _json_object(name: str, value: str) -> dict[str, Any]:
    """The JSON object of an environment variable; its text is never shown (tokens)."""
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError:
        raise ConfigError(f"{name}: must be a JSON object; it is not valid JSON") from None
    if not isinstance(decoded, dict):
        raise ConfigError(f'{name}: must be a JSON object, e.g. {{"tenant": "<token>"}}')
    return decoded


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
    if "auth.tenants" in where:  # keys are tenant ids, values tokens: neither is shown
        return (
            f"auth.tenants{sources.describe('auth.tenants')}: each tenant id must be "
            "letters, digits, '.', '_' or '-' (at most 63, not starting with '.', '_' or "
            "'-'), each value a token or a list of tokens (strings of at most 1024 "
            "characters)"
        )
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
    if key in _URL_KEYS or key == "admin_token" or key.startswith("auth.tenants"):
        shown = ""  # may be (part of) a secret
    return f"{key}{shown}{sources.describe(key)}: {rule}{_accepted_values(_field_type(key))}"
