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

from mmlm_stream.config.models import SpeechModelConfig
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
from mmlm_stream.records.results import SpeechInput, TranscriptSegment, Word


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
        return self.transcribe_many([speech])[0]

    def transcribe_many(
        self, requests: Sequence[Sequence[SpeechInput]]
    ) -> list[list[TranscriptSegment]]:
        """Each caller's transcript; callers of one known language share windows.

        A caller's language is the configured one, else the hint its inputs carry
        (``SpeechInput.language``); a caller without one is decoded on its own, its language
        detected. Callers that share windows are judged apart all the same: the
        background-voice rule compares a caller's sentences only with its own pauses.
        """
        results: list[list[TranscriptSegment]] = [[] for _ in requests]
        by_language: dict[str | None, list[int]] = {}
        for index, items in enumerate(requests):
            if items:
                by_language.setdefault(self._language_of(items), []).append(index)
        for language, members in by_language.items():
            groups = [[index] for index in members] if language is None else [members]
            for group in groups:
                for index, found in zip(
                    group, self._together([requests[i] for i in group], language), strict=True
                ):
                    results[index] = found
        return results

    def _language_of(self, items: Sequence[SpeechInput]) -> str | None:
        if self._config.language is not None:
            return self._config.language
        hints = {item.language for item in items}
        return hints.pop() if len(hints) == 1 else None

    def _together(
        self, requests: Sequence[Sequence[SpeechInput]], language: str | None
    ) -> list[list[TranscriptSegment]]:
        """Several callers' inputs packed together.

        Their media times may overlap (every source has its own clock), so each caller's
        inputs are moved to a stretch of time of their own (``_Lanes``) for packing and
        mapping, and moved back after.
        """
        lanes = _Lanes(requests)
        inputs = [item for item in map(prepare, lanes.inputs) if audible(item)]
        lane_of = [lanes.lane(item.start) for item in inputs]
        with self._lock:
            segments, retry, language = self._pass(inputs, pack(inputs), language, lane_of)
            again = [(stretch, floor) for stretch, floor in retry if audible(stretch)]
            if again:
                stretches = [stretch for stretch, _ in again]
                floors = [floor for _, floor in again]
                windows = pack(stretches, alone=True)
                segments += self._pass(stretches, windows, language, None, floors)[0]
        if not self._config.word_timestamps:
            segments = [replace(segment, words=()) for segment in segments]
        return lanes.split(sorted(segments, key=lambda segment: (segment.start, segment.end)))

    def _pass(
        self,
        inputs: Sequence[SpeechInput],
        windows: Sequence[Window],
        language: str | None,
        lane_of: Sequence[int] | None = None,
        floors: Sequence[float | None] | None = None,
    ) -> tuple[list[TranscriptSegment], list[tuple[SpeechInput, float | None]], str | None]:
        """Decode ``windows``; their segments, the stretches to decode again (with the
        background floor of the window they came from), the language. ``lane_of`` gives each
        input's caller: a window's background floor is measured per caller. ``floors`` (a
        retry pass) gives each input's floor; a retry pass asks for no retries."""
        segments: list[TranscriptSegment] = []
        retry: list[tuple[SpeechInput, float | None]] = []
        for first in range(0, len(windows), self._batch_size):
            batch = windows[first : first + self._batch_size]
            decoded, language = self._decode([w.audio(inputs) for w in batch], language)
            for window, result in zip(batch, decoded, strict=True):
                found = self._segments(window, result, language)
                if floors is not None:
                    segments += foreground(window, found, inputs, floors[window.pieces[0].item])
                    continue
                several = len(window.pieces) > 1
                for part, mine in _by_lane(window, found, lane_of):
                    floor = background_floor(part, mine, inputs)
                    mine = foreground(part, mine, inputs, floor)
                    segments += mine
                    if mine or several:
                        retry += [(stretch, floor) for stretch in skipped(part, mine, inputs)]
        return segments, retry, language

    @abstractmethod
    def _decode(self, audios: Sequence[np.ndarray], language: str | None) -> tuple[list[Any], str]:
        """Decode a batch of windows; returns their results and the language used."""

    @abstractmethod
    def _segments(self, window: Window, result: Any, language: str) -> list[TranscriptSegment]:
        """One window's result as transcript segments in media time."""


LANE_GAP_S = 1000.0
"""Seconds between two callers' stretches of time while they share windows: far more than
any word the aligner could misplace, so no segment lands in another caller's time."""


class _Lanes:
    """Callers' inputs moved onto one clock without overlap: the first caller keeps its
    times (one caller is not moved at all), caller ``k``'s earliest input starts
    ``LANE_GAP_S`` after caller ``k - 1``'s latest end."""

    def __init__(self, requests: Sequence[Sequence[SpeechInput]]) -> None:
        self.inputs: list[SpeechInput] = []
        self.bounds: list[tuple[float, float, float]] = []  # (lane start, lane end, shift)
        cursor: float | None = None
        for items in requests:
            first = min(item.start for item in items)
            last = max(item.end for item in items)
            shift = 0.0 if cursor is None else cursor - first
            self.inputs += [
                replace(item, start=item.start + shift) if shift else item for item in items
            ]
            self.bounds.append((first + shift, last + shift, shift))
            cursor = last + shift + LANE_GAP_S

    def lane(self, t: float) -> int:
        """The caller whose stretch is nearest to ``t``."""
        return min(
            range(len(self.bounds)),
            key=lambda k: max(self.bounds[k][0] - t, t - self.bounds[k][1], 0.0),
        )

    def split(self, segments: Sequence[TranscriptSegment]) -> list[list[TranscriptSegment]]:
        out: list[list[TranscriptSegment]] = [[] for _ in self.bounds]
        for segment in segments:
            k = self.lane(segment.start)
            shift = self.bounds[k][2]
            out[k].append(_shifted(segment, -shift) if shift else segment)
        return out


def _shifted(segment: TranscriptSegment, by: float) -> TranscriptSegment:
    return replace(
        segment,
        start=segment.start + by,
        end=segment.end + by,
        words=tuple(replace(w, start=w.start + by, end=w.end + by) for w in segment.words),
    )


def _by_lane(
    window: Window, found: Sequence[TranscriptSegment], lane_of: Sequence[int] | None
) -> list[tuple[Window, list[TranscriptSegment]]]:
    """The window as one part per caller: its pieces and the segments inside them."""
    if lane_of is None or len({lane_of[p.item] for p in window.pieces}) == 1:
        return [(window, list(found))]
    parts = []
    for lane in sorted({lane_of[p.item] for p in window.pieces}):
        pieces = tuple(p for p in window.pieces if lane_of[p.item] == lane)
        low = min(p.media_start for p in pieces) - LANE_GAP_S / 2
        high = max(p.media_end for p in pieces) + LANE_GAP_S / 2
        mine = [s for s in found if low <= s.start < high]
        parts.append((Window(pieces, window.length, window.sample_rate), mine))
    return parts


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
