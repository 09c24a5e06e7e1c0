"""The client's AIMD rate controller and level board, step by step on a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest

from market_data_store.client import Feedback, LevelBoard, Throttle
from market_data_store.client.throttle import MAX_COORDINATORS, MAX_OURS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **options: float | None) -> Throttle:
    return Throttle(clock=clock, **options)  # type: ignore[arg-type]


def send(t: Throttle, clock: Clock, bars: int, every: float, seconds: float) -> None:
    """Start a request of ``bars`` every ``every`` s for ``seconds`` s (as paced as allowed)."""
    end = clock.now + seconds
    while clock.now < end:
        wait = t.delay(bars, may_probe=True)
        clock.now += wait if wait > 0 else every


def event(cid: str, level: str) -> Feedback:
    return Feedback(cid, level, 0, 10)  # type: ignore[arg-type]


def test_unlimited_until_the_first_cut_which_starts_from_the_rate_sent() -> None:
    clock = Clock()
    t = throttle(clock)
    assert t.rate is None
    send(t, clock, 1000, 0.01, 2.0)  # 100,000 bars/s
    assert t.send_rate() == pytest.approx(100_000, rel=0.02)
    assert t.set_level("hard")
    assert t.rate == pytest.approx(50_000, rel=0.02)
    assert t.paused
    assert t.decreases == 1


def test_soft_cuts_less_than_hard_and_hard_deepens_a_cut_of_the_same_interval() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=10_000)
    t.set_level("soft")
    assert t.rate == pytest.approx(10_000 * math.sqrt(0.5))
    clock.now += 0.01
    t.set_level("hard")  # same episode: deepened to 0.5 x, not cut twice
    assert t.rate == pytest.approx(5_000)
    t.set_level("ok")
    t.set_level("soft")  # within the interval: nothing deeper than 0.5 x
    assert t.rate == pytest.approx(5_000)
    assert t.decreases == 1
    clock.now += 1.0
    t.set_level("ok")
    t.set_level("hard")  # a new interval: a new cut
    assert t.rate == pytest.approx(2_500)


def test_no_cut_below_min_rate() -> None:
    clock = Clock()
    t = throttle(clock, min_rate=1_000, max_rate=1_500)
    t.refused(None)
    assert t.rate == 1_000


def test_ok_grows_quickly_back_towards_the_pre_cut_rate_then_slowly() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=100_000)
    t.set_level("hard")
    t.set_level("ok")
    assert t.rate == 50_000
    rates = []
    for _ in range(5):
        send(t, clock, 1000, 1000 / (t.rate or 1), 1.0)  # using the whole limit
        t.tick()
        rates.append(t.rate)
    # half the way back (25k, 12.5k), then 10 % of the pre-cut rate; capped at max_rate
    assert rates == [75_000, 87_500, 97_500, 100_000, 100_000]


def test_an_unused_limit_does_not_grow() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=100_000)
    t.set_level("soft")
    t.set_level("ok")
    before = t.rate
    clock.now += 5
    assert not t.tick()  # nothing sent
    assert t.rate == before


def test_soft_cuts_again_only_while_the_queue_grows() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=10_000)
    t.answered(6000)
    t.set_level("soft")
    first = t.rate
    assert first is not None
    clock.now += 2.5
    t.answered(5500)  # shrinking: hold
    assert not t.tick()
    assert t.rate == first
    t.answered(7000)  # growing: cut
    assert t.tick()
    assert t.rate == pytest.approx(first * math.sqrt(0.5))


def test_requests_are_paced_by_their_size() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=1000)
    assert t.delay(500, may_probe=False) == 0
    assert t.delay(500, may_probe=False) == pytest.approx(0.5)
    clock.now += 0.5
    assert t.delay(500, may_probe=False) == 0
    clock.now += 10  # idle time is not saved up as a burst
    assert t.delay(500, may_probe=False) == 0
    assert t.delay(500, may_probe=False) == pytest.approx(0.5)


def test_hard_pauses_and_probes_only_when_allowed() -> None:
    clock = Clock()
    t = throttle(clock, probe_interval=5)
    t.set_level("hard")
    assert t.delay(10, may_probe=False) == 5  # wait for the level to change
    assert t.delay(10, may_probe=True) == pytest.approx(5)  # the first probe after 5 s
    clock.now += 5
    assert t.delay(10, may_probe=True) == 0  # the probe
    assert t.delay(10, may_probe=True) == pytest.approx(5)
    t.set_level("ok")
    assert not t.paused


def test_refused_holds_every_request_for_retry_after() -> None:
    clock = Clock()
    t = throttle(clock)
    t.refused(2.0)
    assert t.paused
    assert t.delay(10, may_probe=True) == pytest.approx(2.0)
    clock.now += 2.0
    assert not t.paused
    assert t.delay(10, may_probe=True) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"min_rate": 0},
        {"min_rate": 10, "max_rate": 5},
        {"decrease_factor": 1.0},
        {"increase_fraction": 0},
        {"interval": 0},
        {"max_hold": 0},
    ],
)
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Throttle(**options)  # type: ignore[arg-type]


# -- level board ---------------------------------------------------------------------


def test_every_coordinator_counts_until_ours_is_known() -> None:
    board = LevelBoard()
    board.stream_live = True
    board.from_stream(event("other/bars", "hard"))
    board.from_stream(event("mine/bars", "ok"))
    assert board.level() == "hard"
    assert board.followed("other/bars")
    assert board.learn("mine/bars")
    assert not board.learn("mine/bars")
    assert board.level() == "ok"
    assert not board.followed("other/bars")
    assert board.ours_on_stream()


def test_the_live_stream_is_authoritative_answers_fill_in() -> None:
    board = LevelBoard()
    board.learn("mine/bars")
    assert board.from_answer("mine/bars", "soft")  # no stream: answers count
    assert board.level() == "soft"
    assert not board.ours_on_stream()
    board.stream_live = True
    board.from_stream(event("mine/bars", "ok"))
    assert not board.from_answer("mine/bars", "hard")  # a late answer: ignored
    assert board.level() == "ok"
    board.stream_live = False
    assert board.from_answer("mine/bars", "hard")  # the stream is down: answers count
    assert not board.from_answer("mine/bars", "hard")  # nothing new
    assert board.level() == "hard"


def test_reset_forgets_what_the_stream_said() -> None:
    board = LevelBoard()
    board.stream_live = True
    board.from_stream(event("a/bars", "hard"))
    board.from_answer("b/bars", "soft")
    board.reset_stream()
    assert board.level() == "soft"


def test_the_board_is_bounded() -> None:
    board = LevelBoard()
    for i in range(MAX_COORDINATORS + 5):
        board.from_stream(event(f"c{i}", "ok"))
    assert not board.from_answer("one-more", "hard")
    board.from_stream(event("yet-another", "hard"))
    assert board.level() == "ok"
    for i in range(MAX_OURS + 5):
        board.learn(f"c{i}")
    assert len(board.ours) == MAX_OURS


def test_beyond_the_pre_cut_rate_the_step_doubles_until_the_next_cut() -> None:
    clock = Clock()
    t = throttle(clock)
    send(t, clock, 100, 0.01, 2.0)  # 10,000 bars/s
    t.set_level("hard")
    t.set_level("ok")
    assert t.rate == pytest.approx(5_000, rel=0.02)
    rates = []
    for _ in range(8):
        send(t, clock, 100, 100 / (t.rate or 1), 1.0)
        t.tick()
        rates.append(round(t.rate or 0, -1))
    before = 5_000 * 2  # the pre-cut rate, as measured
    assert rates[3] > before  # back where congestion began within 4 s
    # 10 % of the current rate (at least of the pre-cut one), the step doubling each time
    steps = [b - a for a, b in itertools.pairwise(rates[3:])]
    expected = [0.1 * rate * 2**i for i, rate in enumerate(rates[3:-1])]
    assert steps == pytest.approx(expected, rel=0.05)
    assert all(b > a for a, b in itertools.pairwise(steps))
    t.set_level("soft")  # the next cut: the doubling starts over
    t.set_level("ok")
    clock.now += 5
    send(t, clock, 100, 100 / (t.rate or 1), 1.0)
    cut = t.rate or 0
    t.tick()
    assert (t.rate or 0) - cut < 8_000


def test_a_limit_above_what_is_sent_is_cut_from_what_is_sent() -> None:
    clock = Clock()
    t = throttle(clock, max_rate=100_000)
    send(t, clock, 100, 0.01, 2.0)  # 10,000 bars/s under a limit of 100,000
    t.set_level("hard")
    assert t.rate == pytest.approx(5_000, rel=0.02)


def test_a_sender_held_by_the_limit_counts_as_using_it() -> None:
    """After one 503 early on (a tiny rate), the rate climbs back while requests wait
    for the limit, and a start reserved at the old rate comes sooner at the new one."""
    clock = Clock()
    t = throttle(clock)
    send(t, clock, 10, 0.01, 0.01)
    t.refused(1.0)
    low = t.rate or 0
    clock.now += 1.0
    assert t.delay(5_000, may_probe=False) == 0.0  # starts, and reserves a long slot
    reserved = t.delay(5_000, may_probe=False)
    for _ in range(8):
        clock.now += 1.0
        t.tick()
    assert (t.rate or 0) > 20 * low  # not stuck near min_rate for minutes
    assert t.delay(5_000, may_probe=False) < reserved - 8


def test_a_huge_retry_after_holds_at_most_a_minute() -> None:
    clock = Clock()
    t = throttle(clock)
    t.refused(86_400.0)
    assert t.delay(1, may_probe=False) <= 60.0
    short = throttle(clock, max_hold=0.5)
    short.refused(120.0)
    assert short.delay(1, may_probe=False) == pytest.approx(0.5)
    short.refused(math.nan)  # no hold from what is no number
    assert short.delay(1, may_probe=False) == pytest.approx(0.5)


def test_with_credit_a_cut_made_before_is_lifted_and_no_signal_cuts_again() -> None:
    clock = Clock()
    t = throttle(clock)
    send(t, clock, 100, 0.01, 1.0)
    assert t.set_level("hard")  # the stream's snapshot, before any answer
    assert t.rate is not None
    t.use_credit()  # the first answer carried a credit: it paces the client now
    assert t.rate is None
    assert t.delay(5000, may_probe=False) > 0  # hard still pauses
    t.set_level("ok")
    assert t.delay(5000, may_probe=False) == 0
    t.set_level("soft")
    t.refused(2.0)
    assert t.rate is None  # neither soft nor a 503 cuts a rate...
    assert t.delay(100, may_probe=False) == pytest.approx(2.0)  # ...Retry-After still holds
