"""Package-level promises: version, warnings, the public coordinator API."""

from __future__ import annotations

import inspect
import subprocess
import sys

import market_data_store
from market_data_store import coordinator


def test_version_is_0_5_0() -> None:
    assert market_data_store.__version__ == "0.5.0"


def test_importing_emits_no_warnings_but_ours_are_not_hidden() -> None:
    code = (
        "import warnings; warnings.simplefilter('error');"
        "import market_data_store.contracts, market_data_store.coordinator;"
        "import market_data_store.config, market_data_store.telemetry;"
        "warnings.warn('ours', DeprecationWarning)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # The only failure is our own deliberately raised warning: Core's are filtered.
    assert proc.returncode == 1
    assert "DeprecationWarning: ours" in proc.stderr
    assert "market_data_core" not in proc.stderr


def test_coordinator_exports_the_library_names() -> None:
    expected = {
        "WriteCoordinator", "BoundedQueue", "SinkWorker", "Sink", "RetryPolicy",
        "default_retry_classifier", "CircuitBreaker", "CircuitOpenError", "QueueFullError",
        "DeadLetterQueue", "DLQRecord", "FeedbackBus", "FeedbackSubscriber", "feedback_bus",
        "BackpressureLevel", "FeedbackEvent", "CoordinatorHealth",
    }  # fmt: skip
    assert expected <= set(coordinator.__all__)


def test_write_coordinator_signature_matches_library() -> None:
    params = inspect.signature(coordinator.WriteCoordinator.__init__).parameters
    expected = {
        "sink": inspect.Parameter.empty, "capacity": 10_000, "workers": 4, "batch_size": 500,
        "flush_interval": 0.25, "high_watermark": None, "low_watermark": None,
        "overflow_strategy": "block", "on_backpressure_high": None,
        "on_backpressure_low": None, "drop_callback": None, "retry_policy": None,
        "circuit_breaker": None, "coord_id": "default", "metrics_poll_sec": 0.25,
    }  # fmt: skip
    for name, default in expected.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    stop = inspect.signature(coordinator.WriteCoordinator.stop).parameters
    assert (stop["drain"].default, stop["timeout"].default) == (True, 10.0)


def test_bounded_queue_and_breaker_signatures() -> None:
    q = inspect.signature(coordinator.BoundedQueue.__init__).parameters
    assert list(q)[1:4] == ["capacity", "high_watermark", "low_watermark"]
    for name in ("coord_id", "overflow_strategy", "on_high", "on_low", "drop_callback"):
        assert q[name].kind is inspect.Parameter.KEYWORD_ONLY
    cb = inspect.signature(coordinator.CircuitBreaker.__init__).parameters
    assert (cb["failure_threshold"].default, cb["half_open_after_sec"].default) == (5, 60.0)
