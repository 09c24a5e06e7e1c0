"""docs/upgrading.md's promise: the reference library's import paths keep working.

The lists below are the public names of the reference's ``market_data_store.coordinator``
modules at its tag v0.4.0 (mjdevaccount/market-data-store, ``src/market_data_store/
coordinator/*.py``): what each module defined, plus what it imported from the package or
from Core. Names it imported from the standard library or other packages (``logger``,
``httpx``, ``Optional``, ``Field``...) were never its API and are not listed.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import market_data_core.telemetry as core
import pytest

from market_data_store import coordinator
from market_data_store.coordinator import http_broadcast

UPGRADING = Path(__file__).parents[2] / "docs" / "upgrading.md"

P = "market_data_store.coordinator"

# (module, name): resolves from the same path as in v0.4.0.
KEPT: list[tuple[str, str]] = [
    # __init__ (its __all__ and imports)
    *((P, name) for name in (
        "BackpressureCallback", "BackpressureLevel", "BoundedQueue", "CircuitBreaker",
        "CircuitOpenError", "CoordinatorHealth", "DLQRecord", "DeadLetterQueue", "FeedbackBus",
        "FeedbackEvent", "FeedbackSubscriber", "HttpFeedbackBroadcaster", "QueueFullError",
        "RetryPolicy", "Sink", "SinkWorker", "T", "WriteCoordinator",
        "default_retry_classifier", "feedback_bus",
    )),
    (f"{P}.dlq", "DLQRecord"), (f"{P}.dlq", "DeadLetterQueue"), (f"{P}.dlq", "T"),
    (f"{P}.feedback", "BackpressureLevel"), (f"{P}.feedback", "CoreFeedbackEvent"),
    (f"{P}.feedback", "FeedbackBus"), (f"{P}.feedback", "FeedbackEvent"),
    (f"{P}.feedback", "FeedbackSubscriber"), (f"{P}.feedback", "feedback_bus"),
    (f"{P}.http_broadcast", "FeedbackEvent"), (f"{P}.http_broadcast", "HTTPX_AVAILABLE"),
    (f"{P}.http_broadcast", "HttpFeedbackBroadcaster"), (f"{P}.http_broadcast", "feedback_bus"),
    (f"{P}.policy", "CircuitBreaker"), (f"{P}.policy", "CircuitOpenError"),
    (f"{P}.policy", "RetryPolicy"), (f"{P}.policy", "default_retry_classifier"),
    (f"{P}.queue", "BackpressureCallback"), (f"{P}.queue", "BackpressureLevel"),
    (f"{P}.queue", "BoundedQueue"), (f"{P}.queue", "FeedbackEvent"),
    (f"{P}.queue", "OverflowStrategy"), (f"{P}.queue", "QueueFullError"), (f"{P}.queue", "T"),
    (f"{P}.queue", "feedback_bus"),
    (f"{P}.types", "BackpressureCallback"), (f"{P}.types", "QueueFullError"),
    (f"{P}.types", "Sink"), (f"{P}.types", "Stoppable"), (f"{P}.types", "T"),
    (f"{P}.worker", "BoundedQueue"), (f"{P}.worker", "CircuitBreaker"),
    (f"{P}.worker", "CircuitOpenError"), (f"{P}.worker", "RetryPolicy"),
    (f"{P}.worker", "Sink"), (f"{P}.worker", "SinkWorker"), (f"{P}.worker", "T"),
    (f"{P}.write_coordinator", "BackpressureCallback"),
    (f"{P}.write_coordinator", "BoundedQueue"), (f"{P}.write_coordinator", "CircuitBreaker"),
    (f"{P}.write_coordinator", "CoordinatorHealth"),
    (f"{P}.write_coordinator", "OverflowStrategy"), (f"{P}.write_coordinator", "RetryPolicy"),
    (f"{P}.write_coordinator", "Sink"), (f"{P}.write_coordinator", "SinkWorker"),
    (f"{P}.write_coordinator", "T"), (f"{P}.write_coordinator", "WriteCoordinator"),
]  # fmt: skip

_METRICS = (
    "COORD_ITEMS_SUBMITTED", "COORD_ITEMS_DROPPED", "COORD_QUEUE_DEPTH", "COORD_WORKERS_ALIVE",
    "WORKER_BATCHES_WRITTEN", "WORKER_WRITE_ERRORS", "WORKER_WRITE_LATENCY", "CB_STATE",
)  # fmt: skip

# (module, name): deliberately gone; docs/upgrading.md says what to use instead.
GONE: list[tuple[str, str]] = [
    (P, "CoordinatorRuntimeSettings"), (P, "FeedbackSettings"),
    (f"{P}.settings", "CoordinatorRuntimeSettings"), (f"{P}.settings", "FeedbackSettings"),
    *((f"{P}.metrics", name) for name in _METRICS),
    *((f"{P}.worker", name) for name in _METRICS if name.startswith("WORKER_")),
    *((f"{P}.write_coordinator", name) for name in _METRICS if not name.startswith("WORKER_")),
]  # fmt: skip

# The reference package's __all__.
REFERENCE_ALL = {
    "Sink", "BackpressureCallback", "T", "QueueFullError", "CoordinatorHealth", "DLQRecord",
    "RetryPolicy", "default_retry_classifier", "CircuitBreaker", "CircuitOpenError",
    "BoundedQueue", "SinkWorker", "WriteCoordinator", "CoordinatorRuntimeSettings",
    "DeadLetterQueue", "BackpressureLevel", "FeedbackEvent", "FeedbackSubscriber",
    "FeedbackBus", "feedback_bus", "FeedbackSettings", "HttpFeedbackBroadcaster",
}  # fmt: skip


def _resolve(module: str, name: str) -> object:
    """What ``from module import name`` gives (ImportError when it would fail)."""
    mod = importlib.import_module(module)
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"cannot import name {name!r} from {module!r}") from None


@pytest.mark.parametrize(("module", "name"), KEPT, ids=[f"{m}:{n}" for m, n in KEPT])
def test_reference_name_resolves_from_its_path(module: str, name: str) -> None:
    value = _resolve(module, name)
    if hasattr(coordinator, name):  # one object, whichever path names it
        assert value is getattr(coordinator, name)


@pytest.mark.parametrize(("module", "name"), GONE, ids=[f"{m}:{n}" for m, n in GONE])
def test_gone_name_is_gone_and_documented(module: str, name: str) -> None:
    with pytest.raises(ImportError):
        _resolve(module, name)
    assert f"`{name}`" in UPGRADING.read_text(encoding="utf-8")


def test_star_import_brings_the_reference_names_but_the_settings() -> None:
    assert set(coordinator.__all__) >= REFERENCE_ALL - {
        "CoordinatorRuntimeSettings",
        "FeedbackSettings",
    }
    namespace: dict[str, object] = {}
    exec(f"from {P} import *", namespace)
    assert namespace["HttpFeedbackBroadcaster"] is http_broadcast.HttpFeedbackBroadcaster


def test_backpressure_level_is_cores_enum_on_every_path() -> None:
    for module in (P, f"{P}.feedback", f"{P}.queue"):
        level = _resolve(module, "BackpressureLevel")
        assert level is core.BackpressureLevel
    assert [m.value for m in core.BackpressureLevel] == ["ok", "soft", "hard"]


def test_feedback_events_are_cores() -> None:
    from market_data_store.coordinator.feedback import CoreFeedbackEvent, FeedbackEvent

    assert CoreFeedbackEvent is core.FeedbackEvent
    assert issubclass(FeedbackEvent, CoreFeedbackEvent)
    event = FeedbackEvent.create("c", 50, 100, core.BackpressureLevel.soft, reason="r")
    assert event.utilization == 0.5
    assert http_broadcast.FeedbackEvent is FeedbackEvent


def test_httpx_is_always_available() -> None:
    assert http_broadcast.HTTPX_AVAILABLE is True
    # a dependency in pyproject.toml, not an extra: the flag can only be true
    assert importlib.util.find_spec("httpx") is not None


def test_one_bus_whichever_path_names_it() -> None:
    from market_data_store.coordinator.feedback import feedback_bus

    assert http_broadcast.feedback_bus() is feedback_bus() is coordinator.feedback_bus()


def test_errors_are_runtime_errors_as_before() -> None:
    assert issubclass(coordinator.QueueFullError, RuntimeError)
    assert issubclass(coordinator.CircuitOpenError, RuntimeError)


def test_health_keeps_the_reference_fields() -> None:
    fields = [f.name for f in dataclasses.fields(coordinator.CoordinatorHealth)]
    assert fields[:4] == ["workers_alive", "queue_size", "capacity", "circuit_state"]


def test_compat_paths_still_load_no_http_client() -> None:
    code = (
        "import sys, market_data_store.coordinator.http_broadcast as h;"
        "import market_data_store.coordinator.feedback;"
        "assert h.HTTPX_AVAILABLE;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'httpx'"
        " or m.startswith('market_data_store.feedback')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
