"""Who a request is: the tenant its bearer token names (``auth.tenants``).

Without tenants configured every request is the one tenant ``default``'s, and needs
no token. With tenants, a token names exactly one tenant (the configuration refuses a
token of two); a token is looked up by its SHA-256 digest, so the time a lookup takes
says nothing about how much of a token was right.
"""

from __future__ import annotations

import hashlib

from market_data_store.config import Settings
from market_data_store.storage import DEFAULT_TENANT


class Tenants:
    """The tenants of the store and their tokens (several during a rotation)."""

    def __init__(self, tokens: dict[str, tuple[str, ...]]) -> None:
        self.enabled = bool(tokens)
        self._by_digest = {
            _digest(token): tenant for tenant, several in tokens.items() for token in several
        }

    @classmethod
    def of_settings(cls, settings: Settings) -> Tenants:
        return cls(settings.auth.resolved_tenants)

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of an ``Authorization`` header's value; None when tenants are
        configured and it names none (no header, another scheme, an unknown token)."""
        if not self.enabled:
            return DEFAULT_TENANT
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return self._by_digest.get(_digest(token))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
