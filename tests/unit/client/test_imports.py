"""``market_data_store.client`` stands alone (a producer imports none of the service), and
exports the same names wherever they live inside it."""

from __future__ import annotations

import json
import subprocess
import sys

import market_data_store.client as client

ALLOWED = ("market_data_store._util", "market_data_store.client", "market_data_store.contracts")
"""Our modules the client may import (with their submodules), besides the package itself."""
NEVER = ("market_data_store.coordinator", "litestar", "asyncpg", "redis")


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_importing_the_client_loads_nothing_of_the_service() -> None:
    code = "import json, sys; import market_data_store.client; print(json.dumps(list(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    loaded: list[str] = json.loads(done.stdout)
    assert "market_data_store.client.store_client" in loaded
    ours = {m for m in loaded if m.startswith("market_data_store.")}
    assert {m for m in ours if not _under(m, ALLOWED)} == set()
    assert sorted(m for m in loaded if _under(m, NEVER)) == []


def test_the_package_exports_what_it_always_did() -> None:
    assert sorted(client.__all__) == [
        "BarsDeadLetteredError", "BarsRejectedError", "BatchFailedError", "ClientClosedError",
        "ClientOptions", "ClientStats", "DeadlineExceededError", "Feedback", "InvalidBarError",
        "Level", "LevelBoard", "ReadFailedError", "StoreClient", "StoreClientError",
        "SyncStoreClient", "Throttle",
    ]  # fmt: skip
    assert all(hasattr(client, name) for name in client.__all__)


def test_the_options_type_still_imports_from_where_0_4_0_defined_it() -> None:
    from market_data_store.client.store_client import ClientOptions

    assert ClientOptions is client.ClientOptions
