"""What every Whisper recogniser here shares: utterances packed into 30 s windows.

Whisper pads each call to 30 s, so the recognisers pack several utterances into one window
(``operators/speech_packing``), decode ``batch_size`` windows per call, and map the results
back to each utterance's media time. Subclasses only decode windows and turn one window's
result into transcript segments.

No utterance is lost to a packed window: where a window's decode left a stretch of a piece
without words (``uncovered``: greedy decoding sometimes skips the start of a long window, or
stops after a sentence it took for the last), and where a window of several pieces was
rejected as a whole (one noise piece can sink the speech packed beside it), those stretches
are decoded again, each in a window of its own. A rejected single-piece window is not
retried: that is voice activity on non-speech, which costs Whisper most.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from mmlm_stream.config import SpeechModelConfig
from mmlm_stream.models.roles import SpeechInput, TranscriptSegment, Word
from mmlm_stream.operators.speech_packing import (
    BACKGROUND_ABOVE_DB,
    MAX_WORD_S,
    RETRY_BELOW_DB,
    SAMPLE_RATE,
    Window,
    audible,
    pack,
    prepare,
    speech_level_db,
    uncovered,
)


class PackedWhisper(ABC):
    model_id: str
    _config: SpeechModelConfig
    _batch_size: int
    _lock: threading.Lock

    def warmup(self) -> None:
        """Every code path once at the shapes used later (first calls are slow)."""
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        self.transcribe([SpeechInput(0.0, noise)])

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        inputs = [item for item in map(prepare, speech) if audible(item)]
        with self._lock:
            segments, retry, language = self._pass(inputs, pack(inputs), self._config.language)
            again = [(stretch, floor) for stretch, floor in retry if audible(stretch)]
            if again:
                stretches = [stretch for stretch, _ in again]
                floors = [floor for _, floor in again]
                windows = pack(stretches, alone=True)
                segments += self._pass(stretches, windows, language, floors)[0]
        if not self._config.word_timestamps:
            segments = [replace(segment, words=()) for segment in segments]
        return sorted(segments, key=lambda segment: (segment.start, segment.end))

    def _pass(
        self,
        inputs: Sequence[SpeechInput],
        windows: Sequence[Window],
        language: str | None,
        floors: Sequence[float | None] | None = None,
    ) -> tuple[list[TranscriptSegment], list[tuple[SpeechInput, float | None]], str | None]:
        """Decode ``windows``; their segments, the stretches to decode again (with the
        background floor of the window they came from), the language. ``floors`` (a retry
        pass) gives each input's floor; a retry pass asks for no retries."""
        segments: list[TranscriptSegment] = []
        retry: list[tuple[SpeechInput, float | None]] = []
        for first in range(0, len(windows), self._batch_size):
            batch = windows[first : first + self._batch_size]
            decoded, language = self._decode([w.audio(inputs) for w in batch], language)
            for window, result in zip(batch, decoded, strict=True):
                found = self._segments(window, result, language)
                if floors is None:
                    floor = background_floor(window, found, inputs)
                else:
                    floor = floors[window.pieces[0].item]
                found = foreground(window, found, inputs, floor)
                segments += found
                if floors is None and (found or len(window.pieces) > 1):
                    retry += [(stretch, floor) for stretch in skipped(window, found, inputs)]
        return segments, retry, language

    @abstractmethod
    def _decode(self, audios: Sequence[np.ndarray], language: str | None) -> tuple[list[Any], str]:
        """Decode a batch of windows; returns their results and the language used."""

    @abstractmethod
    def _segments(self, window: Window, result: Any, language: str) -> list[TranscriptSegment]:
        """One window's result as transcript segments in media time."""


def _audio(window: Window, inputs: Sequence[SpeechInput], start: float, end: float) -> np.ndarray:
    """The samples of media time [start, end) in the piece of ``window`` it overlaps most."""
    piece = max(window.pieces, key=lambda p: min(end, p.media_end) - max(start, p.media_start))
    start, end = max(start, piece.media_start), min(end, piece.media_end)
    a = piece.first + round((start - piece.media_start) * piece.sample_rate)
    b = piece.first + round((end - piece.media_start) * piece.sample_rate)
    return inputs[piece.item].samples[a : max(a, b)]


def background_floor(
    window: Window, found: Sequence[TranscriptSegment], inputs: Sequence[SpeechInput]
) -> float | None:
    """The level (dBFS) below which words in ``window`` are background voices, or None.

    Needs pauses to measure the background in and at least two sentences to compare; words
    at most ``BACKGROUND_ABOVE_DB`` over the pauses' level and ``RETRY_BELOW_DB`` under the
    sentences' median are background. In clean speech the pauses are near silence, so
    nothing is.
    """
    gaps = uncovered(window, found, min_s=0.3, margin_s=0.1)
    if len(found) < 2 or not gaps:
        return None
    background = speech_level_db(np.concatenate([_audio(window, inputs, a, b) for _, a, b in gaps]))
    heard = float(
        np.median([speech_level_db(_audio(window, inputs, s.start, s.end)) for s in found])
    )
    return min(heard - RETRY_BELOW_DB, background + BACKGROUND_ABOVE_DB)


def foreground(
    window: Window,
    found: Sequence[TranscriptSegment],
    inputs: Sequence[SpeechInput],
    floor: float | None,
) -> list[TranscriptSegment]:
    """``found`` without the sentences, and the runs of words at their ends, under ``floor``."""
    if floor is None:
        return list(found)

    def loud(start: float, end: float) -> bool:
        return speech_level_db(_audio(window, inputs, start, end)) >= floor

    kept = []
    for segment in found:
        if not loud(segment.start, segment.end):
            continue
        words = _trim(segment.words, lambda w: loud(max(w.start, w.end - MAX_WORD_S), w.end))
        if len(words) == len(segment.words):
            kept.append(segment)
        elif words:
            kept.append(
                replace(
                    segment,
                    start=words[0].start,
                    end=words[-1].end,
                    text=" ".join(w.text for w in words),
                    words=words,
                    confidence=float(np.mean([w.probability for w in words])),
                )
            )
    return kept


def _trim(words: tuple[Word, ...], loud: Callable[[Word], bool]) -> tuple[Word, ...]:
    """``words`` without a quiet run at their end that is two words and half a second or
    more: a background voice the recogniser ran on into after the speaker stopped. The
    start is left alone: the aligner puts the first words after a pause partly in the
    pause, so a quiet start is no evidence; a single quiet word is none either."""
    tail = 0
    while tail < len(words) and not loud(words[len(words) - 1 - tail]):
        tail += 1
    if tail >= 2 and words[-1].end - words[-tail].start >= 0.5:
        return words[: len(words) - tail]
    return words


def skipped(
    window: Window, found: Sequence[TranscriptSegment], inputs: Sequence[SpeechInput]
) -> list[SpeechInput]:
    """The stretches of ``window`` to decode again: uncovered, and about as loud as the
    words that were heard in it (``RETRY_BELOW_DB``); every one when none were heard."""
    heard = [_audio(window, inputs, s.start, s.end) for s in found]
    floor = speech_level_db(np.concatenate(heard)) - RETRY_BELOW_DB if heard else -math.inf
    stretches = [
        SpeechInput(start, _audio(window, inputs, start, end), piece.sample_rate)
        for piece, start, end in uncovered(window, found)
    ]
    return [s for s in stretches if speech_level_db(s.samples) >= floor]
