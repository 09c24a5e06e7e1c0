"""Which client a stream counts against (``feedback.sse.max_streams_per_client``)."""

from __future__ import annotations

import pytest

from market_data_store.http.controllers.feedback import client_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("203.0.113.7", "203.0.113.7"),
        ("::1", "::/64"),  # loopback counts like any address
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),  # the same host's /64
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("not-an-address", "not-an-address"),  # a name from a proxy header: as it is
    ],
)
def test_addresses_and_ipv6_prefixes(host: str, key: str) -> None:
    assert client_key(host) == key
