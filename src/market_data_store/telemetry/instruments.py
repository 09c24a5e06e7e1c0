"""The write coordinator's OpenTelemetry instruments.

Counters and gauges are *observable*: their callbacks read the coordinator's
in-memory stats at collection time, so the hot path pays one integer add per
item instead of an SDK call, and a scrape never touches the database. Only the
write-duration histogram is recorded as it happens (once per batch).

Names are dot-separated without unit or ``_total`` suffixes; the Prometheus
exporter adds those (``mds_coordinator_items_submitted_total``,
``mds_coordinator_write_duration_seconds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from market_data_store.coordinator import BackpressureLevel, WriteCoordinator

CIRCUIT_STATE_VALUE = {"closed": 0, "open": 1, "half_open": 2}
LEVEL_VALUE = {BackpressureLevel.ok: 0, BackpressureLevel.soft: 1, BackpressureLevel.hard: 2}

Reading = Callable[[WriteCoordinator[Any]], Iterable[tuple[float, dict[str, str]]]]


def _one(value: Callable[[WriteCoordinator[Any]], float]) -> Reading:
    return lambda c: ((value(c), {}),)


def _by(attr: str, counts: Callable[[WriteCoordinator[Any]], dict[str, int]]) -> Reading:
    # a snapshot: the OTLP export runs on another thread while the loop adds keys
    return lambda c: ((n, {attr: key}) for key, n in tuple(counts(c).items()))


def _by_type(attr: str, counts: Callable[[WriteCoordinator[Any]], dict[str, int]]) -> Reading:
    """``_by`` for keys not known in advance (exception types), plus one series without
    ``attr`` that stays 0, so the metric exists from start-up (Prometheus: export 0
    for series known in advance) and queries summing over ``attr`` have data."""
    by = _by(attr, counts)
    return lambda c: ((0, {}), *by(c))


# name -> (kind, unit, description, reading)
_OBSERVED: dict[str, tuple[str, str, str, Reading]] = {
    "mds.coordinator.items.submitted": (
        "counter", "{item}", "Items accepted by the coordinator",
        _one(lambda c: c.stats.submitted),
    ),
    "mds.coordinator.items.dropped": (
        "counter", "{item}", "Items dropped, by reason (overflow, shutdown)",
        _by("reason", lambda c: c.stats.dropped),
    ),
    "mds.coordinator.items.dead_lettered": (
        "counter", "{item}", "Items saved to the dead-letter queue",
        _one(lambda c: c.stats.dead_lettered),
    ),
    "mds.coordinator.batches.written": (
        "counter", "{batch}", "Batches written to the sink",
        _one(lambda c: c.stats.batches_written),
    ),
    "mds.coordinator.write.errors": (
        "counter", "{error}",
        "Failed sink writes, by exception type (error_type; the series without it stays 0)",
        _by_type("error_type", lambda c: c.stats.write_errors),
    ),
    "mds.coordinator.queue.depth": (
        "gauge", "{item}", "Items waiting in the queue", _one(lambda c: c.queue.size),
    ),
    "mds.coordinator.queue.capacity": (
        "gauge", "{item}", "Queue capacity", _one(lambda c: c.queue.capacity),
    ),
    "mds.coordinator.workers.alive": (
        "gauge", "{worker}", "Running worker tasks", _one(lambda c: c.workers_alive),
    ),
    "mds.coordinator.circuit.state": (
        "gauge", "1", "Circuit breaker state: 0 closed, 1 open, 2 half_open",
        _one(lambda c: CIRCUIT_STATE_VALUE[c.breaker.state]),
    ),
    "mds.coordinator.backpressure.level": (
        "gauge", "1", "Backpressure level: 0 ok, 1 soft, 2 hard",
        _one(lambda c: LEVEL_VALUE[c.level]),
    ),
}  # fmt: skip


R = TypeVar("R")
Observe = Callable[[CallbackOptions], Iterable[Observation]]


def _register(
    meter: Meter,
    table: dict[str, tuple[str, str, str, R]],
    callback: Callable[[R], Observe],
) -> None:
    """One observable counter or gauge per row of ``table``: name -> (kind, unit,
    description, reading), ``callback(reading)`` turning a reading into observations."""
    for name, (kind, unit, description, reading) in table.items():
        create = (
            meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        )
        create(name, callbacks=[callback(reading)], unit=unit, description=description)


class CoordinatorInstruments:
    """Registers the coordinator instruments on ``meter``; ``track`` coordinators to report."""

    def __init__(self, meter: Meter) -> None:
        self._tracked: list[WriteCoordinator[Any]] = []
        self._listeners: dict[int, Callable[[int, float], None]] = {}
        _register(meter, _OBSERVED, self._callback)
        self.write_duration = meter.create_histogram(
            "mds.coordinator.write.duration",
            unit="s",
            description="Duration of successful sink writes (one batch each)",
            explicit_bucket_boundaries_advisory=[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )  # fmt: skip

    def track(self, coordinator: WriteCoordinator[Any]) -> None:
        """Report ``coordinator`` (labelled by its ``coordinator_id``)."""
        if coordinator in self._tracked:
            return
        attributes = {"coordinator_id": coordinator.coord_id}

        def on_write(items: int, seconds: float) -> None:
            self.write_duration.record(seconds, attributes)

        coordinator.stats.write_listeners.append(on_write)
        self._listeners[id(coordinator)] = on_write
        self._tracked.append(coordinator)

    def untrack(self, coordinator: WriteCoordinator[Any]) -> None:
        if coordinator in self._tracked:
            self._tracked.remove(coordinator)
            coordinator.stats.write_listeners.remove(self._listeners.pop(id(coordinator)))

    def _callback(self, reading: Reading) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for coordinator in tuple(self._tracked):
                base = {"coordinator_id": coordinator.coord_id}
                for value, extra in reading(coordinator):
                    yield Observation(value, {**base, **extra})

        return observe


class _SinkStats(Protocol):
    rows_received: int
    rows_written: int
    copied_batches: int
    merged_batches: int
    conflicts: int


class _HasSinkStats(Protocol):
    @property
    def stats(self) -> _SinkStats: ...


class SinkInstruments:
    """``mds.sink.rows.*``, ``mds.sink.batches`` and ``mds.sink.conflicts`` of the
    tracked sinks."""

    def __init__(self, meter: Meter) -> None:
        self._tracked: dict[str, _HasSinkStats] = {}
        meter.create_observable_counter(
            "mds.sink.rows.received",
            callbacks=[self._reading(lambda s: s.rows_received)],
            unit="{row}",
            description="Rows handed to the sink in successful writes",
        )
        meter.create_observable_counter(
            "mds.sink.rows.written",
            callbacks=[self._reading(lambda s: s.rows_written)],
            unit="{row}",
            description="Rows inserted or changed by the sink (unchanged duplicates excluded)",
        )
        meter.create_observable_counter(
            "mds.sink.batches",
            callbacks=[self._batches],
            unit="{batch}",
            description="Batches written, by path: copy (straight into the table) or merge",
        )
        meter.create_observable_counter(
            "mds.sink.conflicts",
            callbacks=[self._reading(lambda s: s.conflicts)],
            unit="{batch}",
            description="Batches the fast path found meeting existing keys (then merged)",
        )

    def _batches(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, sink in self._tracked.items():
            stats = sink.stats
            yield Observation(stats.copied_batches, {"sink": name, "path": "copy"})
            yield Observation(stats.merged_batches, {"sink": name, "path": "merge"})

    def track(self, sink: _HasSinkStats, name: str) -> None:
        """Report ``sink`` labelled ``sink=name``."""
        self._tracked[name] = sink

    def _reading(
        self, value: Callable[[_SinkStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value(s.stats), {"sink": n}) for n, s in self._tracked.items()]

        return observe


class _FanoutStats(Protocol):
    published_local: int
    published_remote: int
    delivered: int
    conflated: int
    dropped_slow: int
    dropped_send_timeout: int
    refused: int
    refused_per_client: int
    remote_invalid: int


class _DeliveryStats(Protocol):
    sent: int
    retried: int
    discarded: int
    failed: int


class _Fanout(Protocol):
    @property
    def stats(self) -> _FanoutStats: ...
    @property
    def subscriber_count(self) -> int: ...


class _Channel(Protocol):
    @property
    def stats(self) -> _DeliveryStats: ...


class _Bridge(Protocol):
    received: int
    rejected: int


class _Channels(Protocol):
    @property
    def fanout(self) -> _Fanout: ...
    @property
    def redis_bridge(self) -> _Bridge | None: ...
    @property
    def webhook(self) -> _Channel | None: ...
    @property
    def redis_publisher(self) -> _Channel | None: ...


FeedbackReading = Callable[[_Channels], Iterable[tuple[float, dict[str, str]]]]


def _deliveries(field: str) -> FeedbackReading:
    """By channel, each at 0 when not configured: the series exist from start-up."""

    def read(ch: _Channels) -> Iterable[tuple[float, dict[str, str]]]:
        for name, channel in (("webhook", ch.webhook), ("redis", ch.redis_publisher)):
            yield (0 if channel is None else getattr(channel.stats, field)), {"channel": name}

    return read


_FEEDBACK: dict[str, tuple[str, str, str, FeedbackReading]] = {
    "mds.feedback.events.published": (
        "counter", "{event}", "Feedback events published, by origin (local, or remote via Redis)",
        lambda ch: ((ch.fanout.stats.published_local, {"origin": "local"}),
                    (ch.fanout.stats.published_remote, {"origin": "remote"})),
    ),
    "mds.feedback.sse.delivered": (
        "counter", "{event}", "Events written to SSE streams (one per stream and event)",
        lambda ch: ((ch.fanout.stats.delivered, {}),),
    ),
    "mds.feedback.sse.conflated": (
        "counter", "{event}",
        "Events a lagging SSE stream skipped because a newer one of the coordinator replaced them",
        lambda ch: ((ch.fanout.stats.conflated, {}),),
    ),
    "mds.feedback.sse.dropped": (
        "counter", "{stream}",
        "SSE streams ended or refused by the server, by reason (slow, send_timeout, limit, "
        "client_limit)",
        lambda ch: ((ch.fanout.stats.dropped_slow, {"reason": "slow"}),
                    (ch.fanout.stats.dropped_send_timeout, {"reason": "send_timeout"}),
                    (ch.fanout.stats.refused - ch.fanout.stats.refused_per_client,
                     {"reason": "limit"}),
                    (ch.fanout.stats.refused_per_client, {"reason": "client_limit"})),
    ),
    "mds.feedback.sse.subscribers": (
        "gauge", "{stream}", "Open SSE feedback streams",
        lambda ch: ((ch.fanout.subscriber_count, {}),),
    ),
    "mds.feedback.redis.received": (
        "counter", "{message}",
        "Messages read from Redis (channel and replicas' hashes), by outcome (accepted, rejected)",
        # rejected: by the bridge's checks, or (remote_invalid) an event the fan-out
        # could not encode after it passed them
        lambda ch: ((0, {"outcome": "accepted"}), (0, {"outcome": "rejected"}))
        if ch.redis_bridge is None else (
            (ch.redis_bridge.received - ch.redis_bridge.rejected
             - ch.fanout.stats.remote_invalid, {"outcome": "accepted"}),
            (ch.redis_bridge.rejected + ch.fanout.stats.remote_invalid,
             {"outcome": "rejected"}),
        ),
    ),
    "mds.feedback.delivery.sent": (
        "counter", "{event}", "Events delivered by the webhook / published to Redis, by channel",
        _deliveries("sent"),
    ),
    "mds.feedback.delivery.retried": (
        "counter", "{attempt}", "Delivery attempts after a failed one, by channel",
        _deliveries("retried"),
    ),
    "mds.feedback.delivery.discarded": (
        "counter", "{event}", "Events dropped from a full channel buffer or unsent at stop",
        _deliveries("discarded"),
    ),
    "mds.feedback.delivery.failed": (
        "counter", "{event}", "Events given up after every attempt, by channel",
        _deliveries("failed"),
    ),
}  # fmt: skip


class FeedbackInstruments:
    """Feedback delivery counters, read from the tracked channels when scraped."""

    def __init__(self, meter: Meter) -> None:
        self._channels: _Channels | None = None
        _register(meter, _FEEDBACK, self._callback)

    def track(self, channels: _Channels) -> None:
        self._channels = channels

    def untrack(self) -> None:
        self._channels = None

    def _callback(
        self, reading: FeedbackReading
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            channels = self._channels
            if channels is None:
                return []
            return [Observation(value, attrs) for value, attrs in reading(channels)]

        return observe


class ServiceInstruments:
    """``mds.service.ready``: 1 when readiness (``/readyz``) would answer 200, else 0."""

    def __init__(self, meter: Meter) -> None:
        self._ready: Callable[[], bool] | None = None
        meter.create_observable_gauge(
            "mds.service.ready",
            callbacks=[self._observe],
            unit="1",
            description=(
                "1 when ready (database reachable, breaker closed, not shutting down), else 0"
            ),
        )

    def track(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    def untrack(self) -> None:
        self._ready = None

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        ready = self._ready
        return [] if ready is None else [Observation(1 if ready() else 0)]


class TransportCounts(Protocol):
    """What the server's connection guard counts (``server.limits.TransportStats``)."""

    open_connections: int
    over_capacity: int
    header_timeouts: int
    body_timeouts: int
    oversize_headers: int
    write_timeouts: int
    bad_requests: int
    reserve_closed: int


# reason label -> TransportCounts attribute
_REFUSALS = (
    ("over_capacity", "over_capacity"),
    ("header_timeout", "header_timeouts"),
    ("body_timeout", "body_timeouts"),
    ("oversize_headers", "oversize_headers"),
    ("write_timeout", "write_timeouts"),
    ("bad_request", "bad_requests"),
    ("probe_reserve", "reserve_closed"),
)


class TransportInstruments:
    """The connection guard's counts, read at collection time: ``mds.http.connections``
    (open connections within ``server.max_connections``) and
    ``mds.http.connections.refused{reason}`` (503 over the cap, 408 header or body
    timeouts, 431, 400 from the parser, aborts of clients that stopped reading)."""

    def __init__(self, meter: Meter) -> None:
        self._counts: TransportCounts | None = None
        meter.create_observable_gauge(
            "mds.http.connections",
            callbacks=[self._observe_open],
            unit="{connection}",
            description="Open connections counted against server.max_connections",
        )
        meter.create_observable_counter(
            "mds.http.connections.refused",
            callbacks=[self._observe_refused],
            unit="{connection}",
            description=(
                "Connections refused or cut by the server's guard, by reason (over_capacity, "
                "header_timeout, body_timeout, oversize_headers, write_timeout, bad_request, "
                "probe_reserve)"
            ),
        )

    def track(self, counts: TransportCounts) -> None:
        self._counts = counts

    def _observe_open(self, options: CallbackOptions) -> Iterable[Observation]:
        counts = self._counts
        return [] if counts is None else [Observation(counts.open_connections)]

    def _observe_refused(self, options: CallbackOptions) -> Iterable[Observation]:
        counts = self._counts
        if counts is None:
            return []
        return [
            Observation(getattr(counts, field), {"reason": reason}) for reason, field in _REFUSALS
        ]


class _RetentionStats(Protocol):
    @property
    def deleted(self) -> dict[str, int]: ...


class RetentionInstruments:
    """``mds.retention.rows.deleted{table}``: rows retention deleted (dropped chunks'
    rows included), every table from start-up (at 0 until its first delete)."""

    def __init__(self, meter: Meter) -> None:
        self._stats: _RetentionStats | None = None
        meter.create_observable_counter(
            "mds.retention.rows.deleted",
            callbacks=[self._observe],
            unit="{row}",
            description="Rows deleted by retention (POST /admin/retention/apply), by table",
        )

    def track(self, stats: _RetentionStats) -> None:
        self._stats = stats

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._stats
        if stats is None:
            return []
        return [Observation(n, {"table": table}) for table, n in tuple(stats.deleted.items())]


@dataclass(frozen=True)
class Instruments:
    """Every instrument set of one service, registered on one meter when the service is
    built (so ``/metrics`` lists them from the first scrape); each reads what it is
    given to ``track`` once that exists."""

    coordinator: CoordinatorInstruments
    sink: SinkInstruments
    feedback: FeedbackInstruments
    service: ServiceInstruments
    transport: TransportInstruments
    retention: RetentionInstruments

    @classmethod
    def on(cls, meter: Meter) -> Instruments:
        return cls(
            CoordinatorInstruments(meter),
            SinkInstruments(meter),
            FeedbackInstruments(meter),
            ServiceInstruments(meter),
            TransportInstruments(meter),
            RetentionInstruments(meter),
        )
