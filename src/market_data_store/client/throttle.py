"""The client's send-rate controller (AIMD) and the levels it reacts to.

Plain arithmetic over an injected clock: no I/O, no event loop, so every rule is
testable step by step. ``StoreClient`` feeds it what the store says and asks it,
before each request, how long to wait.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from .wire import LEVEL_RANK, Feedback, Level

MAX_COORDINATORS = 1000
"""Coordinators remembered from the stream (the store itself keeps at most 1,000 remote)."""
MAX_OURS = 64
"""Coordinator ids learned from answers (one per replica the client's requests reach)."""
MAX_HOLD = 60.0
"""Longest a Retry-After holds every request by default (a longer one is cut to this:
a proxy's Retry-After of a day must not stop every write for a day)."""
MAX_PROBE_DOUBLINGS = 5
"""Beyond the pre-cut rate the step doubles each interval, up to 32 x ``increase_fraction``."""


class LevelBoard:
    """The latest level of each coordinator, and which coordinators are *ours*.

    Ours are those named by the store's answers (``coordinator_id``). Until one is
    known, every coordinator of the stream counts (a replica's stream shows its own
    coordinator, plus the others' with Redis). The level that applies is the highest
    among those that count.

    While the stream is connected it is authoritative for every coordinator it has
    reported (it delivers every transition, in order); an answer updates only a
    coordinator the stream has not reported, or any coordinator while the stream is
    down (answers race each other and the stream, so they could bring back a level
    the stream already ended).
    """

    def __init__(self) -> None:
        self._levels: dict[str, tuple[Level, bool]] = {}  # id -> (level, from the stream)
        self.ours: set[str] = set()
        self.stream_live = False

    def learn(self, coordinator_id: str) -> bool:
        """Remember one of our coordinators; True when it was new."""
        if coordinator_id in self.ours or len(self.ours) >= MAX_OURS:
            return False
        self.ours.add(coordinator_id)
        return True

    def followed(self, coordinator_id: str) -> bool:
        return not self.ours or coordinator_id in self.ours

    def from_stream(self, event: Feedback) -> None:
        levels = self._levels
        if event.coordinator_id not in levels and len(levels) >= MAX_COORDINATORS:
            return
        levels[event.coordinator_id] = (event.level, True)

    def from_answer(self, coordinator_id: str, level: Level) -> bool:
        """Apply an answer's level; True when it changed what is known."""
        known = self._levels.get(coordinator_id)
        if known is not None and known[1] and self.stream_live:
            return False
        if known is None and len(self._levels) >= MAX_COORDINATORS:
            return False
        self._levels[coordinator_id] = (level, False)
        return known is None or known[0] != level

    def reset_stream(self) -> None:
        """The stream lost track (``event: reset``): forget what it said; its snapshot follows."""
        self._levels = {k: v for k, v in self._levels.items() if not v[1]}

    def ours_on_stream(self) -> bool:
        """The connected stream reports (one of) our coordinators."""
        if not self.stream_live or not self.ours:
            return False
        return any(self._levels.get(c, ("ok", False))[1] for c in self.ours)

    def level(self) -> Level:
        if self.ours:
            known = [self._levels[c][0] for c in self.ours if c in self._levels]
        else:
            known = [level for level, _ in self._levels.values()]
        return max(known, key=LEVEL_RANK.__getitem__, default="ok")


class Throttle:
    """Additive-increase / multiplicative-decrease of the send rate (bars/s).

    - The rate starts unlimited (``max_rate``; None = no limit): only
      ``max_in_flight`` bounds the client until the store first pushes back.
    - Congestion cuts the rate, once per ``interval`` s (the deepest cut of the
      signals within it), never below ``min_rate``: to ``decrease_factor`` (0.5) x
      the rate when the level rises to ``hard`` or a request is refused (503), to
      ``sqrt(decrease_factor)`` (0.71) x when it rises to ``soft``. The cut applies
      to the limit, or to the rate actually sent over the last ``window`` s when
      there is no limit yet or the client sends less than half of it.
    - ``soft``: cut again every 2 x ``interval`` s while the queue size the answers
      report keeps growing; held while it shrinks.
    - ``hard``: no request starts (a *pause*) until the level falls back to ``ok``
      (the store goes hard -> ok once its queue drained to the low watermark). When
      the client cannot hear that (no stream), one *probe* request may start every
      ``probe_interval`` s; its answer tells the level.
    - ``ok``: every ``interval`` s the rate grows, up to ``max_rate``: below the rate
      before the last cut by half the way back to it (at least ``increase_fraction``
      x that rate): a quick return to where congestion began; beyond it by
      ``increase_fraction`` x that rate, doubling each interval (x2, x4 ... x32): a
      careful, then faster probe for more room (BIC-like). Not while the client sends
      less than half its limit (a limit nobody uses says nothing).
    - ``refused(s)`` (a 503 with ``Retry-After: s``): a cut, and no request starts
      for ``s`` seconds, at most ``max_hold``.

    Requests are paced by their size: one of ``n`` bars delays the next start by
    ``n / rate`` s.
    """

    def __init__(
        self,
        *,
        min_rate: float = 100.0,
        max_rate: float | None = None,
        decrease_factor: float = 0.5,
        increase_fraction: float = 0.1,
        interval: float = 1.0,
        probe_interval: float = 5.0,
        window: float = 2.0,
        max_hold: float = MAX_HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not min_rate > 0:
            raise ValueError("min_rate must be > 0")
        if max_rate is not None and max_rate < min_rate:
            raise ValueError("max_rate must be >= min_rate")
        if not 0 < decrease_factor < 1:
            raise ValueError("decrease_factor must be between 0 and 1")
        if not increase_fraction > 0:
            raise ValueError("increase_fraction must be > 0")
        if not interval > 0 or not probe_interval > 0 or not window > 0:
            raise ValueError("interval, probe_interval and window must be > 0")
        if not max_hold > 0:
            raise ValueError("max_hold must be > 0")
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.decrease_factor = decrease_factor
        self._soft_factor = math.sqrt(decrease_factor)
        self.increase_fraction = increase_fraction
        self.interval = interval
        self.probe_interval = probe_interval
        self.window = window
        self.max_hold = max_hold
        self.clock = clock
        self.rate: float | None = max_rate
        self.level: Level = "ok"
        self.queue_size: int | None = None  # as the latest answer reported it
        self.decreases = 0
        now = clock()
        self._before_cut = max_rate or min_rate
        self._probes = 0  # increases in a row beyond the pre-cut rate
        self._last_decrease = -math.inf
        self._last_increase = now
        self._queue_at_decrease: int | None = None
        self._next_start = now
        self._hold_until = now
        self._next_probe = now
        self._sent: deque[tuple[float, int]] = deque(maxlen=4096)
        self._first_send: float | None = None
        self._held = False  # a request waited for the limit since the last increase
        self.credit_mode = False
        """The store sends credits: they pace the client; levels and 503s cut no rate
        (``hard`` still pauses, a 503's Retry-After still holds)."""

    # -- what the store says ---------------------------------------------------------

    def set_level(self, level: Level) -> bool:
        """The level that applies now; True when it changed."""
        old = self.level
        if level == old:
            return False
        self.level = level
        now = self.clock()
        if LEVEL_RANK[level] > LEVEL_RANK[old]:
            self._decrease(now, self.decrease_factor if level == "hard" else self._soft_factor)
        if level == "hard":
            self._next_probe = now + self.probe_interval
        else:
            self._last_increase = now  # the first increase comes a full interval after ok
        return True

    def refused(self, retry_after: float | None) -> None:
        """A 503: congestion, and nothing starts before ``retry_after`` s."""
        now = self.clock()
        self._decrease(now, self.decrease_factor)
        if retry_after is not None and retry_after > 0:
            hold = min(retry_after, self.max_hold)
            self._hold_until = max(self._hold_until, now + hold)

    def use_credit(self) -> None:
        """The store sends credits: they pace the client from now on. A rate cut
        before (a level seen on the stream before the first answer) is lifted."""
        if not self.credit_mode:
            self.credit_mode = True
            self.rate = self.max_rate
            self._next_start = self.clock()

    def answered(self, queue_size: int) -> None:
        self.queue_size = queue_size

    def tick(self) -> bool:
        """Periodic adjustment (call every ``interval`` s or so); True when the rate changed."""
        now = self.clock()
        if self.level == "ok":
            return self._increase(now)
        if self.level == "soft" and now - self._last_decrease >= 2 * self.interval:
            grew = (
                self.queue_size is not None
                and self._queue_at_decrease is not None
                and self.queue_size > self._queue_at_decrease
            )
            if grew:
                return self._decrease(now, self._soft_factor)
        return False

    # -- pacing ----------------------------------------------------------------------

    def delay(self, n: int, *, may_probe: bool) -> float:
        """Seconds before a request of ``n`` bars may start; 0.0: start it now (its
        slot is taken). ``may_probe``: while hard, a probe may start."""
        now = self.clock()
        if now < self._hold_until:
            return self._hold_until - now
        if self.level == "hard":
            if not may_probe:
                return self.probe_interval  # until the level changes (the caller is woken)
            if now < self._next_probe:
                return self._next_probe - now
            self._next_probe = now + self.probe_interval
        elif self.rate is not None:
            if now < self._next_start:
                self._held = True  # a sender waits for the limit: it is used
                return self._next_start - now
            self._next_start = max(self._next_start, now) + n / self.rate
        if self._first_send is None:
            self._first_send = now
        self._sent.append((now, n))
        return 0.0

    def send_rate(self) -> float:
        """Bars/s whose requests started within the last ``window`` s (or since the
        first request, when that is more recent)."""
        now = self.clock()
        sent = self._sent
        while sent and now - sent[0][0] > self.window:
            sent.popleft()
        if not sent or self._first_send is None:
            return 0.0
        span = min(self.window, max(now - self._first_send, self.window / 8))
        return sum(n for _, n in sent) / span

    @property
    def paused(self) -> bool:
        return self.level == "hard" or self.clock() < self._hold_until

    # -- the rules -------------------------------------------------------------------

    def _decrease(self, now: float, factor: float) -> bool:
        if self.credit_mode:
            return False
        if now - self._last_decrease < self.interval:
            # one cut per interval (soft, hard and 503s of one episode), the deepest
            deeper = max(self.min_rate, self._before_cut * factor)
            if self.rate is not None and deeper < self.rate:
                self.rate = deeper
                return True
            return False
        sent, rate = self.send_rate(), self.rate
        # a limit the client does not use (it sends less than half of it, not paused)
        # says nothing: cut from what is sent, or the cut changes nothing
        base = sent if rate is None or 0 < sent < rate / 2 else rate
        base = max(base, self.min_rate)
        self._before_cut = base
        self._probes = 0
        self.rate = max(self.min_rate, base * factor)
        self._last_decrease = now
        self._last_increase = now
        self._queue_at_decrease = self.queue_size
        self.decreases += 1
        return True

    def _increase(self, now: float) -> bool:
        rate = self.rate
        if rate is None or now - self._last_increase < self.interval:
            return False
        self._last_increase = now
        if self.max_rate is not None and rate >= self.max_rate:
            return False
        # the limit is used when a request waited for it or the last start reserved
        # time beyond now (a big batch at a low rate), whatever the recent send rate
        held = self._held or self._next_start > now
        self._held = False
        if not held and self.send_rate() < rate / 2:
            return False  # the producer does not use the limit it has
        base = self.increase_fraction * self._before_cut
        if rate < self._before_cut:
            step = max(base, (self._before_cut - rate) / 2)
        else:  # beyond where congestion began: probe for more, faster each time
            step = max(base, self.increase_fraction * rate) * 2 ** min(
                self._probes, MAX_PROBE_DOUBLINGS
            )
            self._probes += 1
        new = rate + step
        self.rate = min(new, self.max_rate) if self.max_rate is not None else new
        # a start reserved at the old rate comes sooner at the new one
        wait = self._next_start - now
        if wait > 0:
            self._next_start = now + wait * rate / self.rate
        return True
