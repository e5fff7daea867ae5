"""What every Whisper recogniser shares (``whisper_windows``), with a scripted decoder.

A decoder that skips speech, or writes down a background voice, is what Whisper does on
real recordings now and then; these tests script it to show that no utterance is lost and
that the background stays out (pure logic, no model).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from mmlm_stream.config.models import SpeechModelConfig
from mmlm_stream.models.whisper_windows import PackedWhisper
from mmlm_stream.operators.speech_packing import (
    RETRY_MIN_S,
    Window,
    pack,
    speech_level_db,
    uncovered,
    words_to_segments,
)
from mmlm_stream.records.results import SpeechInput, TranscriptSegment, Word

SR = 16_000
Script = Callable[[np.ndarray, int], list[Word]]


class Scripted(PackedWhisper):
    """Answers each window with the words ``script(audio, call)`` gives (window seconds)."""

    def __init__(self, script: Script, word_timestamps: bool = True) -> None:
        self.model_id = "scripted"
        self._config = SpeechModelConfig(word_timestamps=word_timestamps)
        self._batch_size = 4
        self._lock = threading.Lock()
        self.script = script
        self.windows: list[float] = []

    def _decode(self, audios: Sequence[np.ndarray], language: str | None):
        out = []
        for audio in audios:
            self.windows.append(len(audio) / SR)
            out.append(self.script(audio, len(self.windows)))
        return out, "en"

    def _segments(self, window: Window, result: list[Word], language: str):
        return words_to_segments(window, result, language)


def voice(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(
        np.float32
    )


def words_over(start: float, end: float, prefix: str) -> list[Word]:
    """One word per 0.4 s of [start, end), each ``prefix`` and varied letters (a repeated
    word would read as a Whisper repetition loop and be dropped as junk)."""
    count = max(1, int((end - start) / 0.4))
    step = (end - start) / count
    rng = np.random.default_rng(round(start * 100))
    return [
        Word(
            start + i * step,
            start + (i + 1) * step,
            " " + prefix + "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 5)),
            0.9,
        )
        for i in range(count)
    ]


def text(segments: Sequence[TranscriptSegment]) -> list[str]:
    return [w.text for s in segments for w in s.words]


def test_speech_the_decoder_skipped_is_decoded_again_on_its_own():
    """A 20 s utterance whose first 8 s the greedy pass skipped (Whisper does that)."""

    def script(audio: np.ndarray, call: int) -> list[Word]:
        seconds = len(audio) / SR
        if call == 1:
            return words_over(8.0, seconds, "late")
        return words_over(0.0, seconds, "again")

    recogniser = Scripted(script)
    segments = recogniser.transcribe([SpeechInput(100.0, voice(20.0, 0.1))])
    assert len(recogniser.windows) == 2
    assert recogniser.windows[1] == pytest.approx(8.0 - 0.15, abs=0.01)
    heard = text(segments)
    assert heard[0].startswith("again") and heard[-1].startswith("late")
    assert segments[0].start == pytest.approx(100.0)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(segments))


def test_a_quiet_stretch_between_sentences_is_background_and_not_retried():
    """Other voices in a pause, 10 dB under the speaker: neither retried nor written down."""
    audio = np.concatenate([voice(4.0, 0.1, 1), voice(3.0, 0.03, 2), voice(4.0, 0.1, 3)])

    def script(samples: np.ndarray, call: int) -> list[Word]:
        assert call == 1, "nothing is decoded a second time"
        return [
            *words_over(0.0, 3.9, "near"),
            *words_over(4.9, 6.1, "far"),  # the decoder wrote down the babble
            *words_over(7.0, 11.0, "also"),
        ]

    segments = Scripted(script).transcribe([SpeechInput(0.0, audio)])
    heard = text(segments)
    assert heard and not any(w.startswith("far") for w in heard)
    assert any(w.startswith("near") for w in heard) and any(w.startswith("also") for w in heard)


def test_clean_speech_keeps_every_word_and_costs_one_call():
    """In a pause of near silence nothing is background: a soft word stays."""
    audio = np.concatenate([voice(3.0, 0.1, 1), voice(1.0, 0.0005, 2), voice(3.0, 0.01, 3)])
    calls = []

    def script(samples: np.ndarray, call: int) -> list[Word]:
        calls.append(call)
        return [*words_over(0.0, 2.9, "loud"), *words_over(4.1, 7.0, "soft")]

    segments = Scripted(script).transcribe([SpeechInput(0.0, audio)])
    assert len(text(segments)) == len(words_over(0.0, 2.9, "")) + len(words_over(4.1, 7.0, ""))
    assert calls == [1]


def test_word_times_left_out_only_after_the_checks():
    recogniser = Scripted(lambda audio, call: words_over(0.0, len(audio) / SR, "w"), False)
    segments = recogniser.transcribe([SpeechInput(0.0, voice(2.0, 0.1))])
    assert segments and all(s.words == () for s in segments)


def test_uncovered_stretches_keep_off_the_words_beside_them():
    [window] = pack([SpeechInput(10.0, voice(10.0, 0.1))])
    heard = [TranscriptSegment(12.0, 14.0, "a"), TranscriptSegment(14.5, 16.0, "b")]
    found = [(round(a, 2), round(b, 2)) for _, a, b in uncovered(window, heard)]
    assert found == [(10.0, 11.85), (16.15, 20.0)]  # the 0.5 s gap is under RETRY_MIN_S
    assert RETRY_MIN_S > 0.5


def test_every_input_gets_a_window_of_its_own_when_alone():
    inputs = [SpeechInput(0.0, voice(2.0, 0.1)), SpeechInput(5.0, voice(3.0, 0.1))]
    assert len(pack(inputs)) == 1
    assert [len(w.pieces) for w in pack(inputs, alone=True)] == [1, 1]


def test_speech_level_follows_the_loud_frames():
    bursts = np.zeros(SR, np.float32)
    bursts[: SR // 5] = 0.1  # a fifth of the second is loud: a syllable and pauses
    assert speech_level_db(bursts) == pytest.approx(-20.0, abs=0.1)
    assert speech_level_db(np.zeros(SR, np.float32)) == -120.0
