"""Packing speech into 30 s recognition windows and mapping results back (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlm_stream.operators.speech_packing import (
    GAP_S,
    WINDOW_S,
    audible,
    looks_like_junk,
    pack,
    prepare,
    split_words,
    text_to_segment,
    words_to_segments,
)
from mmlm_stream.records.results import SpeechInput, Word

SR = 16_000


def speech(start: float, seconds: float, value: float = 0.1) -> SpeechInput:
    return SpeechInput(start, np.full(round(seconds * SR), value, dtype=np.float32))


def test_short_inputs_share_one_window_separated_by_silence():
    inputs = [speech(5.0, 2.0, 0.1), speech(40.0, 3.0, 0.2)]
    [window] = pack(inputs)
    first, second = window.pieces
    assert (first.window_start, first.window_end) == (0.0, 2.0)
    assert second.window_start == pytest.approx(2.0 + GAP_S)
    assert window.duration == pytest.approx(5.0 + GAP_S)
    audio = window.audio(inputs)
    assert np.all(audio[: 2 * SR] == np.float32(0.1))
    assert np.all(audio[2 * SR : round((2 + GAP_S) * SR)] == 0.0)
    assert np.all(audio[round((2 + GAP_S) * SR) :] == np.float32(0.2))


def test_windows_never_exceed_thirty_seconds_and_keep_input_order():
    inputs = [speech(10.0 * i, 7.0) for i in range(10)]
    windows = pack(inputs)
    assert all(w.duration <= WINDOW_S for w in windows)
    assert len(windows) == 3  # four 7 s pieces + three gaps = 29.2 s per window
    items = [piece.item for w in windows for piece in w.pieces]
    assert items == list(range(10))


def test_a_long_input_is_split_at_its_quietest_moment():
    samples = np.full(70 * SR, 0.3, dtype=np.float32)
    samples[round(27.0 * SR) : round(27.2 * SR)] = 0.0  # a pause between words
    [*windows] = pack([SpeechInput(100.0, samples)])
    pieces = [piece for w in windows for piece in w.pieces]
    assert all(piece.duration <= WINDOW_S for piece in pieces)
    assert 27.0 <= pieces[0].duration <= 27.2
    assert pieces[1].media_start == pytest.approx(100.0 + pieces[0].duration)
    assert sum(piece.length for piece in pieces) == len(samples)  # nothing lost or doubled


def test_the_last_piece_of_a_long_input_shares_a_window_with_the_next_input():
    windows = pack([speech(0.0, 35.0), speech(50.0, 2.0)])
    assert len(windows) == 2
    assert [piece.item for piece in windows[1].pieces] == [0, 1]


def test_window_times_map_back_to_media_time_clipped_to_the_piece():
    [window] = pack([speech(12.0, 2.0), speech(40.0, 3.0)])
    first, second = window.pieces
    assert first.to_media(0.5) == pytest.approx(12.5)
    assert first.to_media(2.3) == pytest.approx(14.0)  # in the gap: clipped
    assert second.to_media(second.window_start + 1.0) == pytest.approx(41.0)
    assert second.to_media(-1.0) == pytest.approx(40.0)
    assert window.locate(0.2, 0.6) is first
    assert window.locate(1.9, 2.6) is second  # overlaps the second piece more
    assert window.locate(2.05, 2.1) is first  # in the gap, nearer the first piece


def test_inputs_at_different_sample_rates_are_refused_and_empty_ones_skipped():
    with pytest.raises(ValueError, match="sample rates"):
        pack([speech(0.0, 1.0), SpeechInput(1.0, np.zeros(8000, np.float32), 8000)])
    assert pack([]) == []
    assert pack([SpeechInput(0.0, np.zeros(0, np.float32))]) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=70 * SR), min_size=1, max_size=12))
def test_packing_covers_every_sample_once_within_the_window_limit(lengths):
    inputs = [SpeechInput(float(i), np.zeros(n, np.float32)) for i, n in enumerate(lengths)]
    windows = pack(inputs)
    covered = dict.fromkeys(range(len(lengths)), 0)
    for window in windows:
        assert window.length <= WINDOW_S * SR
        previous_end = None
        for piece in window.pieces:
            assert piece.offset + piece.length <= window.length
            if previous_end is not None:
                assert piece.offset - previous_end == round(GAP_S * SR)
            previous_end = piece.offset + piece.length
            assert piece.media_start == pytest.approx(inputs[piece.item].start + piece.first / SR)
            covered[piece.item] += piece.length
    assert covered == dict(enumerate(lengths))


def test_prepare_makes_clean_mono_float32_at_16_khz():
    noisy = np.array([0.5, np.nan, np.inf, -np.inf, 2.0], dtype=np.float64)
    assert prepare(SpeechInput(0.0, noisy)).samples.tolist() == [0.5, 0.0, 0.0, 0.0, 1.0]
    pcm = prepare(SpeechInput(0.0, np.array([16384, -32767], dtype=np.int16)))
    assert pcm.samples.dtype == np.float32
    assert pcm.samples.tolist() == pytest.approx([0.5, -1.0], abs=1e-4)
    stereo = prepare(SpeechInput(0.0, np.ones((100, 2), np.float32)))
    assert stereo.samples.shape == (100,)
    resampled = prepare(SpeechInput(3.0, np.zeros(22050, np.float32), 22050))
    assert (resampled.start, resampled.sample_rate, len(resampled.samples)) == (3.0, SR, SR)
    assert len(prepare(SpeechInput(0.0, np.ones(10, np.float32), 0)).samples) == 0


def test_only_long_enough_and_loud_enough_inputs_are_audible():
    assert not audible(SpeechInput(0.0, np.full(10, 0.5, np.float32)))
    assert not audible(SpeechInput(0.0, np.zeros(SR, np.float32)))
    assert not audible(SpeechInput(0.0, np.full(SR, 1e-4, np.float32)))  # -80 dBFS
    assert audible(SpeechInput(0.0, np.full(SR, 0.01, np.float32)))  # -40 dBFS


@pytest.mark.parametrize(
    ("text", "junk"),
    [
        ("", True),
        (" ... ", True),
        ("the the the the", True),
        ("Thank you. " * 20, True),
        ("The quick brown fox jumps over the lazy dog.", False),
        ("\u4f60\u597d\uff0c\u4e16\u754c\u3002", False),  # Chinese: no spaces
    ],
)
def test_invented_or_looping_text_is_recognised(text, junk):
    assert looks_like_junk(text) is junk


def test_words_become_segments_per_input_in_media_time():
    [window] = pack([speech(5.0, 2.0), speech(40.0, 2.0)])
    second = window.pieces[1].window_start
    words = [
        Word(0.1, 0.5, " Hello", 0.9),
        Word(0.5, 1.1, " there.", 0.8),
        Word(second + 0.2, second + 0.6, " Good", 0.9),
        Word(second + 0.6, second + 2.5, " morning", 0.7),  # runs past the input's end
    ]
    first_segment, second_segment = words_to_segments(window, words, "en")
    assert (first_segment.start, first_segment.end) == pytest.approx((5.1, 6.1))
    assert first_segment.text == "Hello there."
    assert [w.text for w in first_segment.words] == ["Hello", "there."]
    assert second_segment.start == pytest.approx(40.2)
    assert second_segment.end == pytest.approx(42.0)  # clipped to the input
    assert second_segment.language == "en"
    assert second_segment.confidence == pytest.approx(0.8)


def test_an_input_whose_words_are_improbable_is_dropped():
    [window] = pack([speech(0.0, 2.0), speech(10.0, 2.0)])
    second = window.pieces[1].window_start
    words = [Word(0.1, 0.5, " you", 0.1), Word(second + 0.1, second + 0.5, " Yes", 0.9)]
    segments = words_to_segments(window, words, None, min_probability=0.3)
    assert [s.text for s in segments] == ["Yes"]
    assert segments[0].start == pytest.approx(10.1)


def test_word_times_can_be_left_out():
    [window] = pack([speech(0.0, 2.0)])
    [segment] = words_to_segments(window, [Word(0.1, 0.5, " Hi", 0.9)], None, keep_words=False)
    assert segment.words == ()
    assert (segment.start, segment.end) == pytest.approx((0.1, 0.5))


def test_segments_break_at_sentence_ends_and_long_pauses():
    words = [
        Word(0.0, 0.3, " One", 1.0),
        Word(0.3, 0.6, " two.", 1.0),
        Word(0.7, 1.0, " Three", 1.0),
        Word(2.5, 2.8, " four", 1.0),
    ]
    assert [[w.text for w in g] for g in split_words(words)] == [
        [" One", " two."],
        [" Three"],
        [" four"],
    ]


def test_a_segment_without_word_times_is_clipped_to_the_input_it_overlaps_most():
    [window] = pack([speech(5.0, 2.0), speech(40.0, 3.0)])
    segment = text_to_segment(window, 1.5, 4.0, " Hello again ", "en", 0.7)
    assert segment is not None
    assert segment.text == "Hello again"
    assert (segment.start, segment.end) == pytest.approx((40.0, 40.0 + 4.0 - 2.0 - GAP_S))
    assert text_to_segment(window, 0.0, 1.0, " ... ", "en") is None
