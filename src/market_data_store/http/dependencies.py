"""What controllers receive, and only this way: providers read the app's ``State``,
filled by the lifespan. Tests replace any of them by key in ``create_app``.

Providers close over the ``State`` object instead of declaring a ``state``
parameter: a provider without parameters skips Litestar's per-request argument
parsing, which for a probe costs more than the probe itself.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from market_data_store.config import Settings
from market_data_store.coordinator import FeedbackBus, WriteCoordinator
from market_data_store.feedback import FeedbackChannels, FeedbackFanout
from market_data_store.ingest import BarDecoder
from market_data_store.storage import BarReader, BarRow, DbPool
from market_data_store.telemetry import Telemetry

from .health import HealthSources
from .lifecycle import Lifecycle

# key on app.state -> the type its provider returns (for the signature Litestar reads)
PROVIDED: dict[str, Any] = {
    "db_pool": DbPool,
    "bar_reader": BarReader,
    "bar_decoder": BarDecoder,
    "coordinator": WriteCoordinator[BarRow],
    "feedback_bus": FeedbackBus,
    "feedback_channels": FeedbackChannels,
    "feedback_fanout": FeedbackFanout,
    "health_sources": HealthSources,
    "lifecycle": Lifecycle,
    "settings": Settings,
    "telemetry": Telemetry,
}


def _reader(state: State, key: str, kind: Any) -> Any:
    def provide() -> Any:
        return state[key]

    provide.__annotations__["return"] = kind
    provide.__name__ = f"provide_{key}"
    return provide


def build_dependencies(state: State) -> dict[str, Provide]:
    """One ``Provide`` per component, each reading ``state[key]`` when a request needs it."""
    return {
        key: Provide(_reader(state, key, kind), sync_to_thread=False)
        for key, kind in PROVIDED.items()
    }
