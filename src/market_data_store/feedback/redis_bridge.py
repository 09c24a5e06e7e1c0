"""Feedback across replicas over Redis pub/sub.

``RedisFeedbackPublisher`` (Core's ``FeedbackPublisher``) publishes each local
event on the channel from a bounded outbox, and keeps this replica's latest
events in a Redis hash that expires unless refreshed (so a replica that starts
later learns the current level of every live replica at once).
``RedisFeedbackBridge`` subscribes to the channel and hands the events of other
replicas to the SSE side (``FeedbackFanout.publish_remote``), never to the
local bus: a replica's webhook sends only its own events. Its own coordinators
(``<instance_id>/…``) are never taken as another replica's, whatever Redis holds
(a previous process's hash under the same id, say). Everything read is bounded:
each event by ``wire.decode_event``, each hash to ``MAX_FIELDS_PER_KEY`` fields, a
re-read to ``MAX_SEED_KEYS`` hashes and ``MAX_SEED_EVENTS`` events; a bad one is
counted (``rejected``), logged at most once per interval, and dropped.

Redis down or restarted: nothing blocks (the bus only buffers), health reads
``disconnected``, both reconnect with capped backoff, the bridge resubscribes
and re-reads the hashes, the publisher re-sends its latest events; each
failure is logged at most once per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from market_data_store._util import ThrottledLog, backoff_delay
from market_data_store.coordinator import FeedbackEvent

from .outbox import DeliveryStats, Outbox
from .wire import (
    INSTANCE_ID,
    MAX_EVENT_BYTES,
    WireError,
    decode_event,
    encode_event,
    instance_of,
)

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, TimeoutError)
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 5.0
SCAN_COUNT = 100
"""Fields per HSCAN call: the bridge yields to the loop in between."""
KEY_SCAN_COUNT = 1000
"""Keys per SCAN call (only the matching ones come back: a shared Redis may hold many)."""
MAX_FIELDS_PER_KEY = 1000
"""Fields read from one replica's hash (it has a handful of coordinators; more is hostile)."""
MAX_SEED_KEYS = 1000
"""Replicas' hashes read per re-read."""
MAX_SEED_EVENTS = 10_000
"""Events read per re-read, all hashes together (``FeedbackFanout`` keeps 1,000 remote
coordinators)."""
MAX_KEY_BYTES = MAX_FIELDS_PER_KEY * (MAX_EVENT_BYTES + 128)
"""Most bytes of one replica's hash (``MEMORY USAGE``, exact) read: HSCAN brings values
back whole, so a hash of a few 16 MiB values would cost its size at every re-read."""


def _backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (publishing or
    subscribing): 0.1 s, doubling, at most ``MAX_BACKOFF``, no jitter."""
    return backoff_delay(failures, initial=INITIAL_BACKOFF, maximum=MAX_BACKOFF)


def latest_key(channel: str, instance_id: str) -> str:
    """The hash holding one replica's latest event per coordinator."""
    return f"{channel}:latest:{instance_id}"


def _client(url: str, timeout: float) -> Redis:
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # we retry ourselves, with backoff, without blocking anyone
        health_check_interval=0,
    )


def _describe(exc: BaseException) -> str:
    """The error's type only: Redis messages can quote the URL (and its password)."""
    return type(exc).__name__


def error_category(exc: BaseException) -> str:
    """One word an unauthenticated health probe may show (``_describe`` is for operators)."""
    if isinstance(exc, (TimeoutError, RedisTimeoutError)):
        return "timeout"
    if isinstance(exc, AuthenticationError):
        return "auth_failed"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "unreachable"
    return "error"


class RedisFeedbackPublisher:
    """Publishes this replica's feedback events on ``channel``.

    ``publish`` only buffers (the bus never waits on Redis). Every ``refresh_sec``
    the latest local events are written again to the replica's hash, which
    expires after three missed refreshes; that write doubles as the health check.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        instance_id: str,
        latest: Callable[[], list[FeedbackEvent]],
        queue_size: int = 1000,
        timeout: float = 2.0,
        refresh_sec: float = 10.0,
    ) -> None:
        self.channel = channel
        self.stats = DeliveryStats()
        self.connected = False
        self.last_error: str | None = "not connected yet"
        self.last_error_category: str | None = "not_connected_yet"
        self._url = url
        self._timeout = timeout
        self._refresh_sec = refresh_sec
        self._key = latest_key(channel, instance_id)
        self._latest = latest
        self._client: Redis | None = None
        self._outbox = Outbox[FeedbackEvent]("redis", queue_size, self._deliver, self.stats)
        self._refresher: asyncio.Task[None] | None = None
        self._failures = ThrottledLog(log)

    async def publish(self, event: FeedbackEvent) -> None:
        """Buffer ``event`` for publishing; returns at once (Core ``FeedbackPublisher``)."""
        self._outbox.put_nowait(event)

    @property
    def buffered(self) -> int:
        return self._outbox.size

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = _client(self._url, self._timeout)
        self._outbox.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="redis-refresh")

    async def stop(self) -> None:
        """Publish what is buffered for at most ``timeout`` s, then close."""
        if self._client is None:
            return
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._outbox.stop(self._timeout)
        client, self._client = self._client, None
        with contextlib.suppress(*REDIS_ERRORS):
            await asyncio.wait_for(client.aclose(), self._timeout)
        self.connected = False

    async def _deliver(self, event: FeedbackEvent) -> bool:
        """Publish one event, retrying with backoff until Redis takes it."""
        body = encode_event(event)
        failures = 0
        while True:
            try:
                await self._write({event.coordinator_id: body}, publish=[body])
                return True
            except REDIS_ERRORS as exc:
                self._failed(exc)
            failures += 1
            self.stats.retried += 1
            await asyncio.sleep(_backoff(failures))

    def _latest_bodies(self) -> dict[str, bytes]:
        return {e.coordinator_id: encode_event(e) for e in self._latest()}

    async def _execute(
        self, latest: dict[str, bytes], publish: list[bytes], *, replace: bool = False
    ) -> None:
        """HSET the latest events (and renew the hash's expiry), PUBLISH ``publish``.
        ``replace``: ``latest`` are all of ours, the hash becomes exactly them, at once
        (what a previous process under our id left there goes)."""
        client = self._client
        if client is None:
            raise RedisError("publisher stopped")
        async with client.pipeline(transaction=replace) as pipe:
            if replace:
                pipe.delete(self._key)
            if latest:
                pipe.hset(self._key, mapping=latest)  # type: ignore[arg-type]
                pipe.expire(self._key, max(1, round(3 * self._refresh_sec)))
            elif not replace:
                pipe.ping()
            for body in publish:
                pipe.publish(self.channel, body)
            await pipe.execute()

    async def _write(
        self, latest: dict[str, bytes], publish: list[bytes], *, replace: bool = False
    ) -> None:
        await self._execute(latest, publish, replace=replace)
        if not self.connected:
            self.connected, self.last_error, self.last_error_category = True, None, None
            log.info("redis feedback publisher connected")
            # replicas may have missed our events while Redis was away: send the latest
            bodies = self._latest_bodies()
            await self._execute(bodies, list(bodies.values()), replace=True)

    async def _refresh_loop(self) -> None:
        """Keep the hash alive (it expires after 3 missed refreshes) and notice a
        lost or recovered Redis even when no event is published."""
        while True:
            try:
                await self._write(self._latest_bodies(), publish=[], replace=True)
                delay = self._refresh_sec
            except REDIS_ERRORS as exc:
                self._failed(exc)
                delay = min(self._refresh_sec, 1.0)  # notice the recovery sooner
            except Exception:
                log.exception("redis feedback refresh failed unexpectedly")
                delay = self._refresh_sec
            await asyncio.sleep(delay)

    def _failed(self, exc: BaseException) -> None:
        if self.connected:
            log.warning("redis feedback publisher lost Redis: %s", _describe(exc))
        self.connected = False
        self.last_error = _describe(exc)
        self.last_error_category = error_category(exc)
        self._failures.log(
            logging.WARNING, "publish", "redis feedback publisher: %s; retrying", _describe(exc)
        )


class RemoteEvents(Protocol):
    """Where the bridge hands other replicas' events (``FeedbackFanout``)."""

    def publish_remote(self, event: FeedbackEvent) -> bool: ...

    def expire_remote(self, max_age: float) -> list[str]: ...


class RedisFeedbackBridge:
    """Feeds other replicas' events from ``channel`` into ``remote``.

    Every ``refresh_sec`` it re-reads the replicas' hashes: coordinators whose
    replica stopped refreshing its hash (it is gone) expire from ``remote`` after
    three intervals. An idle subscription is pinged every second; no answer within
    ``timeout`` counts as a lost connection (a silently dead socket is noticed).
    Coordinators of ``instance_id`` (this replica) are never handed to ``remote``.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        remote: RemoteEvents,
        *,
        instance_id: str,
        timeout: float = 2.0,
        refresh_sec: float = 10.0,
    ) -> None:
        self.channel = channel
        self.instance_id = instance_id
        self.connected = False
        self.last_error: str | None = "not connected yet"
        self.last_error_category: str | None = "not_connected_yet"
        self.received = 0
        self.rejected = 0
        self._url = url
        self._timeout = timeout
        self._refresh_sec = refresh_sec
        self._remote = remote
        self._task: asyncio.Task[None] | None = None
        self._failures = ThrottledLog(log)
        self._key_failures = ThrottledLog(log, interval=3600.0)  # a key is read every 10 s
        self._own_key = latest_key(channel, instance_id).encode()
        self._key_prefix = latest_key(channel, "").encode()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-bridge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=self._timeout)
        self.connected = False

    async def _run(self) -> None:
        failures = 0  # in a row: reset once subscribed
        while True:
            client = pubsub = None
            try:
                client = _client(self._url, self._timeout)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await asyncio.wait_for(pubsub.subscribe(self.channel), self._timeout)
                await self._seed(client)
                if not self.connected:
                    log.info("redis feedback bridge subscribed to %s", self.channel)
                self.connected, self.last_error, self.last_error_category = True, None, None
                failures = 0
                await self._listen(client, pubsub)
            except REDIS_ERRORS as exc:
                if self.connected:
                    log.warning("redis feedback bridge lost Redis: %s", _describe(exc))
                self.connected, self.last_error = False, _describe(exc)
                self.last_error_category = error_category(exc)
                self._failures.log(
                    logging.WARNING, "bridge", "redis feedback bridge: %s; resubscribing",
                    _describe(exc),
                )  # fmt: skip
            except Exception as exc:
                self.connected, self.last_error = False, _describe(exc)
                self.last_error_category = error_category(exc)
                self._failures.log(logging.ERROR, "bug", "redis feedback bridge failed", exc=True)
            finally:
                for closing in (pubsub, client):
                    if closing is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(closing.aclose(), self._timeout)
            failures += 1
            await asyncio.sleep(_backoff(failures))

    async def _seed(self, client: Redis) -> bool:
        """The latest events every live replica keeps in Redis (missed while away),
        read in chunks: at most ``MAX_SEED_KEYS`` hashes, ``MAX_FIELDS_PER_KEY`` fields
        each, ``MAX_SEED_EVENTS`` in all; keys that are not a replica's hash (named
        otherwise, not hashes, too large) are refused without counting against them.
        Our own hash (a previous process's) is skipped. True when every hash was read:
        only then may a coordinator not seen be taken as gone."""
        pattern = latest_key(_glob_escape(self.channel), "*")
        keys = events = 0
        async with asyncio.timeout(self._timeout * 5):
            async for key in client.scan_iter(match=pattern, count=KEY_SCAN_COUNT):
                if key == self._own_key:
                    continue
                if keys >= MAX_SEED_KEYS or events >= MAX_SEED_EVENTS:
                    self._refuse_key(
                        "seed", "more than %d hashes or %d events under %s; the rest unread",
                        MAX_SEED_KEYS, MAX_SEED_EVENTS, pattern,
                    )  # fmt: skip
                    return False
                read = await self._seed_key(client, key)
                if read is not None:
                    keys += 1
                    events += read
        return True

    async def _seed_key(self, client: Redis, key: bytes) -> int | None:
        """Accept the events of one replica's hash (at most ``MAX_FIELDS_PER_KEY``); how
        many were read, None when the key is not a replica's hash."""
        instance = key.removeprefix(self._key_prefix).decode(errors="replace")
        if not INSTANCE_ID.fullmatch(instance):
            self._refuse_key("key", "a key not named after an instance id: %.80r", key)
            return None
        try:  # what HSCAN would bring back, before it does: values are read whole
            size = await client.memory_usage(key, samples=0)
        except ResponseError:  # MEMORY not allowed here: the field bound alone holds
            size = None
        if size is not None and size > MAX_KEY_BYTES:
            self._refuse_key("big", "%.80r holds %d bytes (at most %d read)", key, size,
                             MAX_KEY_BYTES)  # fmt: skip
            return None
        read, cursor = 0, 0
        while True:
            try:
                cursor, fields = await client.hscan(key, cursor, count=SCAN_COUNT)
            except ResponseError:  # not a hash: nothing of ours
                self._refuse_key("key", "%.80r is not a hash", key)
                return None
            bodies = cast("dict[bytes, bytes]", fields).values()  # (a list with no_values)
            for body in itertools.islice(bodies, MAX_FIELDS_PER_KEY - read):
                self._accept(body, instance)
                read += 1
            if cursor == 0:
                return read
            if read >= MAX_FIELDS_PER_KEY:
                self._refuse_key(
                    "oversized", "%.80r has more than %d fields; the rest unread",
                    key, MAX_FIELDS_PER_KEY,
                )  # fmt: skip
                return read
            await asyncio.sleep(0)  # validating a chunk took the loop: let others run

    def _refuse_key(self, what: str, msg: str, *args: object) -> None:
        """A key of the channel's prefix that is not read whole: counted as a rejected
        message, logged at most once an hour (it is met again at every re-read)."""
        self.received += 1
        self.rejected += 1
        self._key_failures.log(logging.WARNING, what, "redis feedback bridge: " + msg, *args)

    async def _listen(self, client: Redis, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = next_seed = loop.time()
        next_seed += self._refresh_sec
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            now = loop.time()
            if message is not None:
                heard = now  # a message or the answer to our ping
                if message.get("type") == "message":
                    self._accept(message["data"])
            elif now - heard > self._timeout + 1.0:
                raise TimeoutError(f"no answer from Redis within {self._timeout:g}s")
            else:
                await asyncio.wait_for(pubsub.ping(), self._timeout)
            if now >= next_seed:
                next_seed = now + self._refresh_sec
                if await self._seed(client):  # cut short: what was not read is not gone
                    self._remote.expire_remote(3 * self._refresh_sec)

    def _accept(self, body: bytes | str, key_instance: str | None = None) -> None:
        """One event from the channel or from ``key_instance``'s hash: handed to
        ``remote`` unless it is invalid (counted, logged, dropped) or one of ours.
        Nothing raised here stops the bridge."""
        self.received += 1
        try:
            event = decode_event(body)
            instance = instance_of(event.coordinator_id)
            if key_instance is not None and instance != key_instance:
                raise WireError(f"a coordinator of another instance in {key_instance}'s hash")
            if instance == self.instance_id:
                return  # ours: coming back from the channel, or a previous process's
            self._remote.publish_remote(event)
        except WireError as exc:
            self.rejected += 1
            self._failures.log(logging.WARNING, "wire", "redis feedback bridge: %s", exc)
        except Exception:
            self.rejected += 1
            self._failures.log(
                logging.ERROR, "event", "redis feedback bridge: an event failed; dropped", exc=True
            )


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
