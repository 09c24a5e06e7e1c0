"""URLs in settings: validated at load, never shown with a credential.

``_url_problem`` says why a URL setting cannot be used (``rules`` applies it); ``redact_url``,
``redact_text`` and ``redacted`` mask what may be a secret, for logs and ``mds-store
config``; ``endpoint_origin`` keeps only scheme, host and port. ``SecretsFilter`` masks
the configured URLs' secrets in every log record, whichever library wrote it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import msgspec

from .schema import Settings

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
    data["auth"]["tenants"] = dict.fromkeys(settings.auth.tenants, "<set>")
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


# the scheme starts where a word starts: a long run of scheme characters is tried once,
# not from each of its positions (quadratic: 10 s for a 100,000-character message)
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_text(text: str) -> str:
    """``text`` (an error message) with every URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
SHORTEST_MASKED = 4
"""Secrets shorter than this are masked only inside URLs (``redact_text``): masking
every "ab" of every log line would garble the log and point at the secret."""


class SecretsFilter(logging.Filter):
    """A handler filter that masks the configured URLs' secrets and the bearer tokens
    (admin, tenants) in every record,
    whichever logger wrote it: a third-party library (httpx logs every request's URL at
    INFO, its path and query included) as well as ours.

    Each configured URL, where it appears whole, is replaced by what ``redacted``
    shows of it; its password, the webhook's path and query (they often are the
    webhook's secret) and the values of secret-looking query parameters are masked
    wherever they appear, also in a URL a library rebuilt (percent-encoded or not);
    and every URL in the text goes through ``redact_text``. The record's message and
    exception text are rewritten; the filter never drops a record.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        whole: dict[str, str] = {}
        fragments: set[str] = set()
        for key, url in _urls(settings):
            if not url:
                continue
            parts = _UrlParts.of(url)
            webhook = key == "feedback.webhook.url"
            whole[url] = endpoint_origin(url) if webhook else redact_url(url)
            if parts is None:
                continue
            if parts.userinfo is not None and ":" in parts.userinfo:
                fragments.add(parts.userinfo.partition(":")[2])
            if webhook and parts.path not in ("", "/"):
                fragments.add(parts.path)
            if parts.query:
                if webhook:
                    fragments.add(parts.query)
                for name, value in parse_qsl(parts.query, keep_blank_values=True):
                    if webhook or _SECRET_PARAMETER.search(name):
                        fragments.add(value)
            if parts.fragment:
                fragments.add(parts.fragment)
        # the bearer tokens (the admin's, unless the default, and every tenant's)
        if not settings.admin_token_is_default:
            fragments.add(settings.admin_token)
        fragments.update(t for tokens in settings.auth.resolved_tenants.values() for t in tokens)
        # as written, decoded, and re-encoded with either case of hex digits (a library
        # that rebuilds the URL may write %7C for %7c)
        fragments |= {unquote(f) for f in fragments}
        fragments |= {_PERCENT.sub(lambda m: m.group(0).upper(), f) for f in fragments}
        fragments |= {_PERCENT.sub(lambda m: m.group(0).lower(), f) for f in fragments}
        self._whole = sorted(whole.items(), key=lambda item: -len(item[0]))
        self._fragments = sorted(
            (f for f in fragments if len(f) >= SHORTEST_MASKED), key=len, reverse=True
        )

    def clean(self, text: str) -> str:
        """``text`` with the configured secrets masked."""
        for url, shown in self._whole:
            if url in text:
                text = text.replace(url, shown)
        for fragment in self._fragments:
            if fragment in text:
                text = text.replace(fragment, "***")
        return redact_text(text) if "://" in text else text

    def filter(self, record: logging.LogRecord) -> bool:
        # An exception here would reach the code that logged (a filter runs in its
        # call): a record that cannot be read is replaced, never raised about.
        try:
            self._mask(record)
        except Exception as exc:
            record.msg = f"<a {record.levelname} record of {record.name} not shown: {exc!r}>"
            record.args, record.exc_info, record.exc_text, record.stack_info = (
                None,
                None,
                None,
                None,
            )
        return True

    def _mask(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # as Formatter.format does
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)


THIRD_PARTY_QUIET = ("httpx", "httpcore")
"""Loggers kept at WARNING: httpx logs every request (its URL whole) at INFO."""


def guard_logging(settings: Settings, handlers: list[logging.Handler] | None = None) -> None:
    """Quiet the chatty third-party loggers and put a ``SecretsFilter`` for ``settings``
    on ``handlers`` (the root logger's by default: every record that propagates)."""
    for name in THIRD_PARTY_QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    secrets = SecretsFilter(settings)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretsFilter)]:
            handler.removeFilter(old)
        handler.addFilter(secrets)
