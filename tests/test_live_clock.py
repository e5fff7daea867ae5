"""The wall-clock time of live media: from arrivals, not from when probing ended."""

from __future__ import annotations

from datetime import UTC, datetime

from mmlm_stream.pipeline.live_clock import LiveClock
from mmlm_stream.records.channels import StreamState, StreamStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _streaming(media: float, wall: float) -> StreamStatus:
    return StreamStatus("cam", StreamState.STREAMING, media, datetime.fromtimestamp(wall, UTC))


def _at(clock: LiveClock, media: float) -> float:
    wall = clock(media)
    assert wall is not None
    return wall.timestamp()


def test_media_buffered_while_probing_is_dated_when_it_arrived():
    now = Clock()
    clock = LiveClock(now)
    assert clock(0.0) is None  # not live yet
    # Probing held the first 3 s back: 'streaming' is declared at wall 1003 for media 0 ...
    clock.set(_streaming(0.0, 1003.0))
    for media in (0.0, 1.0, 2.0, 3.0):
        now.now = 1003.0  # ... and the buffered items come out at once,
        clock.observe(media)
    now.now = 1004.05
    clock.observe(4.0)  # then in real time
    assert abs(_at(clock, 3.0) - 1003.0) < 1e-6
    assert abs(_at(clock, 10.0) - 1010.0) < 1e-6


def test_each_session_keeps_its_own_clock_after_a_reconnect():
    now = Clock()
    clock = LiveClock(now)
    clock.set(_streaming(0.0, 1000.0))
    now.now = 1040.0  # a 30 s outage after 10 s of media: media time goes on at 10 s
    clock.set(_streaming(10.0, 1040.0))
    clock.observe(10.0)
    assert abs(_at(clock, 5.0) - 1005.0) < 1e-6  # a window of the first session
    assert abs(_at(clock, 12.0) - 1042.0) < 1e-6
