"""Windowing: every item in exactly the windows covering it, in order, once, whatever order."""

from __future__ import annotations

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlm_stream.operators.window import Windower
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import span_of
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import AudioEncoding, FrameEncoding

EMB = np.zeros(2, np.float32)


def frame(t: float) -> FrameEncoding:
    return FrameEncoding(t, EMB)


def chunk(start: float, end: float) -> AudioEncoding:
    return AudioEncoding(start, end, -20.0, -6.0)


def cue(start: float, end: float, text: str = "x") -> SubtitleCue:
    return SubtitleCue("s", start, end, text)


def covers(start: float, end: float, item) -> bool:
    a, b = span_of(item)
    if b - a <= 1e-9:
        return start <= a < end
    return a < end and b > start


def summary(window):
    """Window contents by value (items hold numpy arrays, which do not compare with ==)."""
    return window.start, {c: [span_of(i) for i in items] for c, items in window.items.items()}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(events, window_s, hop_s, channels, lateness=None, clock=None):
    w = Windower("s", channels, window_s, hop_s, max_lateness_s=lateness, clock=clock or Clock())
    out = []
    for channel, item in events:
        w.add(channel, item)
        out += w.ready()
    return out + w.finish(), w


items_strategy = st.lists(
    st.one_of(
        st.floats(0, 40, allow_nan=False).map(lambda t: (Modality.VISUAL, frame(round(t, 3)))),
        st.tuples(st.floats(0, 40), st.floats(0.01, 3)).map(
            lambda p: (Modality.AUDIO, chunk(round(p[0], 3), round(p[0] + p[1], 3)))
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(items_strategy, st.sampled_from([(4.0, 2.0), (4.0, 4.0), (3.0, 1.0), (2.5, 0.5)]))
def test_every_item_lands_in_exactly_the_windows_that_cover_it(events, shape):
    window_s, hop_s = shape
    events = sorted(events, key=lambda e: span_of(e[1])[0])
    windows, _ = run(events, window_s, hop_s, [Modality.VISUAL, Modality.AUDIO])
    starts = [w.start for w in windows]
    assert starts == [round(k * hop_s, 9) for k in range(len(windows))]  # contiguous, unique
    assert all(math.isclose(w.end - w.start, window_s) for w in windows)
    for _, item in events:
        holders = {w.start for w in windows if any(i is item for c in w.items.values() for i in c)}
        expected = {w.start for w in windows if covers(w.start, w.end, item)}
        assert holders == expected
    last = max(span_of(item)[1] for _, item in events)
    assert windows[-1].start < last + 1e-9 or windows[-1].start == 0.0


@settings(max_examples=100, deadline=None)
@given(items_strategy, st.randoms(use_true_random=False))
def test_shuffled_arrival_within_lateness_gives_identical_windows(events, rnd):
    ordered = sorted(events, key=lambda e: span_of(e[1])[0])
    shuffled = list(ordered)
    rnd.shuffle(shuffled)
    a, _ = run(ordered, 4.0, 2.0, [Modality.VISUAL, Modality.AUDIO])
    # no watermark progress is trusted while shuffled: feed everything, then close
    w = Windower("s", [Modality.VISUAL, Modality.AUDIO], 4.0, 2.0, clock=Clock())
    for channel, item in shuffled:
        w.add(channel, item)
    b = w.finish()
    assert [summary(x) for x in a] == [summary(y) for y in b]


def test_window_closes_only_when_every_channel_passed_its_end():
    w = Windower("s", [Modality.VISUAL, Modality.AUDIO], 4.0, 2.0, clock=Clock())
    w.add(Modality.VISUAL, frame(5.0))
    assert w.ready() == []
    w.add(Modality.AUDIO, chunk(3.0, 4.0))
    w.advance(Modality.AUDIO, 4.0)
    closed = w.ready()
    assert [c.start for c in closed] == [0.0]
    assert closed[0].items[Modality.AUDIO] and closed[0].present == {
        Modality.VISUAL,
        Modality.AUDIO,
    }


def test_live_window_closes_after_max_lateness_and_late_items_are_counted():
    clock = Clock()
    w = Windower("s", [Modality.VISUAL, Modality.AUDIO], 4.0, 4.0, max_lateness_s=2.0, clock=clock)
    w.add(Modality.VISUAL, frame(1.0))
    w.add(Modality.VISUAL, frame(4.5))  # frames reached past 4.0 at wall 0
    assert w.ready() == []
    clock.now = 2.5
    closed = w.ready()
    assert [c.start for c in closed] == [0.0]
    assert closed[0].present == {Modality.VISUAL}  # audio never arrived: reported absent
    w.add(Modality.AUDIO, chunk(2.0, 3.0))  # too late for [0, 4)
    assert w.late_dropped[Modality.AUDIO] == 1
    rest = w.finish()
    assert [c.start for c in rest] == [4.0]
    assert Modality.AUDIO not in rest[0].items


def test_no_window_is_emitted_twice():
    w = Windower("s", [Modality.VISUAL], 2.0, 1.0, clock=Clock())
    seen = []
    for t in np.arange(0, 10, 0.5):
        w.add(Modality.VISUAL, frame(float(t)))
        seen += [c.start for c in w.ready()]
    seen += [c.start for c in w.finish()]
    seen += [c.start for c in w.finish()]
    assert seen == sorted(set(seen)) and seen[0] == 0.0 and seen[-1] == 9.0


def test_cue_spanning_several_windows_is_in_each():
    events = [(Modality.SUBTITLES, cue(1.0, 7.0)), (Modality.VISUAL, frame(8.0))]
    windows, _ = run(events, 4.0, 2.0, [Modality.SUBTITLES, Modality.VISUAL])
    holding = [w.start for w in windows if w.of(Modality.SUBTITLES)]
    assert holding == [0.0, 2.0, 4.0, 6.0]


def test_random_stream_with_watermarks_never_loses_in_time_items():
    rnd = random.Random(3)
    w = Windower("s", [Modality.VISUAL, Modality.AUDIO], 4.0, 2.0, clock=Clock())
    closed = []
    frames = [frame(t / 2) for t in range(60)]
    chunks = [chunk(float(t), float(t + 1)) for t in range(30)]
    stream = [(Modality.VISUAL, f) for f in frames] + [(Modality.AUDIO, c) for c in chunks]
    stream.sort(key=lambda e: span_of(e[1])[0] + rnd.uniform(0, 0.4))
    for channel, item in stream:
        w.add(channel, item)
        closed += w.ready()
    closed += w.finish()
    assert sum(w.late_dropped.values()) == 0
    total_frames = sum(len(c.of(Modality.VISUAL)) for c in closed)
    assert total_frames == sum(
        len([f for f in frames if covers(c.start, c.end, f)]) for c in closed
    )


def test_deferred_channel_gets_an_early_snapshot_before_the_window_closes():
    w = Windower(
        "s", [Modality.VISUAL, Modality.SPEECH], 4.0, 2.0, clock=Clock(), deferred=[Modality.SPEECH]
    )
    w.add(Modality.VISUAL, frame(1.0))
    w.advance(Modality.VISUAL, 4.5)
    early = w.ready_early()
    assert [c.start for c in early] == [0.0] and early[0].items[Modality.VISUAL]
    assert w.ready() == [] and w.ready_early() == []  # once each; the window stays open
    w.add(Modality.SPEECH, chunk(1.0, 2.0))  # a late transcript still lands in it
    w.advance(Modality.SPEECH, 4.5)
    closed = w.ready()
    assert [c.start for c in closed] == [0.0]
    assert closed[0].items[Modality.SPEECH] and w.late_dropped[Modality.SPEECH] == 0
