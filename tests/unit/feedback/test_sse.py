"""The one SSE encoder: the exact bytes every stream sends."""

from __future__ import annotations

from market_data_store import feedback
from market_data_store.feedback import FeedbackFanout, sse

from .frames import HARD, event


def test_an_event_is_event_id_data_lines_then_an_empty_line() -> None:
    assert sse.frame(42, "feedback", b'{"level":"hard"}') == (
        b'event: feedback\nid: 42\ndata: {"level":"hard"}\n\n'
    )
    assert sse.frame(7, "reset", b'{"reason":"last_event_id_unknown"}') == (
        b'event: reset\nid: 7\ndata: {"reason":"last_event_id_unknown"}\n\n'
    )


def test_a_comment_the_keepalive_and_the_retry_hint() -> None:
    assert sse.comment("hello") == b": hello\n\n"
    assert sse.KEEPALIVE == b": keepalive\n\n"
    assert sse.RETRY_MS == 2000
    assert sse.retry(sse.RETRY_MS) == b"retry: 2000\n\n"


def test_the_fanout_frames_each_event_with_it() -> None:
    frame = FeedbackFanout().publish(event("a", HARD, 80))
    assert frame.wire == sse.frame(frame.seq, "feedback", frame.data)
    assert frame.wire == b"event: feedback\nid: %d\ndata: %b\n\n" % (frame.seq, frame.data)


def test_the_package_reexports_the_same_objects() -> None:
    assert feedback.KEEPALIVE is sse.KEEPALIVE
    assert feedback.RETRY_MS == sse.RETRY_MS
    assert feedback.Frame is sse.Frame


def test_padding_is_comment_lines_of_bounded_length_that_join_the_next_message() -> None:
    for size in (2, 100, sse.PADDING_LINE, 3 * sse.PADDING_LINE + 10, 60_000):
        pad = sse.padding(size)
        assert abs(len(pad) - size) <= 1
        lines = pad.split(b"\n")
        assert lines.pop() == b""  # ends with LF, and no empty line: no message of its own
        assert all(line.startswith(b":") and 1 <= len(line) < sse.PADDING_LINE for line in lines)
    assert sse.padding(0) == b":\n"
