"""Pack speech stretches into recognition windows of at most 30 s and map results back.

Whisper pads every call to 30 s, so ten 3 s utterances transcribed one by one cost ten full
windows. Laid end to end with a short silence between them they cost one. Each ``Piece``
records where it sits in its window and where it came from in the media, so a time the model
reports in window seconds maps back to media seconds exactly (sample arithmetic, no drift).

Also here, shared by every speech model: cleaning inputs (``prepare``, ``audible``), turning
window-time words or segments into media-time transcript segments, and recognising the
text Whisper invents on non-speech (``looks_like_junk``).

Pure logic (numpy only): no model, torch or Ray import.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mmlm_stream.records.results import SpeechInput, TranscriptSegment, Word

logger = logging.getLogger(__name__)

WINDOW_S = 30.0
"""Longest window Whisper sees in one pass."""
GAP_S = 0.4
"""Silence between two pieces: long enough for Whisper to hear a break, short enough to pack."""
SPLIT_SEARCH_S = 5.0
"""A long input is cut at its quietest moment within this many seconds before the limit."""
QUIET_FRAME_S = 0.05
"""Resolution of the search for the quietest moment."""
SAMPLE_RATE = 16_000
"""What every Whisper expects."""
MIN_SPEECH_S = 0.1
"""Shorter inputs hold no word; they are skipped rather than sent to the model."""
SILENCE_DBFS = -60.0
"""Inputs quieter than this (RMS) are digital silence: skipped, since Whisper invents words."""
MAX_COMPRESSION_RATIO = 2.4
"""Whisper's own limit: text that zlib compresses more than this is a repetition loop."""
RETRY_MIN_S = 1.5
"""Speech this long inside a piece with no words is decoded again on its own (``uncovered``)."""
RETRY_MARGIN_S = 0.15
"""How far a retried stretch keeps from the words beside it (word ends are approximate)."""
MAX_WORD_S = 1.0
"""Longest a spoken word is taken to last when judging what the words cover."""
RETRY_BELOW_DB = 6.0
"""A stretch quieter than the words heard beside it by more than this is background (the
voices of a babble between two sentences), not skipped speech, and is not decoded again."""
BACKGROUND_ABOVE_DB = 3.0
"""Words at most this much louder than the pauses between the sentences of a window are
the background (other voices under the speaker), when that is also RETRY_BELOW_DB below
the sentences: the recogniser hears a babble in the pauses and writes it down."""
SENTENCE_END = re.compile("[.!?\u3002\uff01\uff1f]['\")\\]]*$")
"""Sentence-ending punctuation (Latin and CJK full-width), optionally followed by a closer."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One stretch of one input, placed at ``offset`` samples inside its window."""

    item: int
    """Index of the input in the packed batch."""
    offset: int
    first: int
    """First sample of the piece within its input."""
    length: int
    media_start: float
    """Media time of the piece's first sample."""
    sample_rate: int

    @property
    def window_start(self) -> float:
        return self.offset / self.sample_rate

    @property
    def window_end(self) -> float:
        return (self.offset + self.length) / self.sample_rate

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    @property
    def media_end(self) -> float:
        return self.media_start + self.duration

    def to_media(self, t: float) -> float:
        """Window seconds to media seconds, clipped to this piece."""
        inside = min(max(t - self.window_start, 0.0), self.duration)
        return self.media_start + inside

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(end, self.window_end) - max(start, self.window_start))

    def distance(self, t: float) -> float:
        return max(self.window_start - t, t - self.window_end, 0.0)


@dataclass(frozen=True, slots=True)
class Window:
    """Pieces laid end to end with silence between them; ``length`` samples in all."""

    pieces: tuple[Piece, ...]
    length: int
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    def audio(self, inputs: Sequence[SpeechInput]) -> np.ndarray:
        """The window's samples (float32), silence in the gaps."""
        out = np.zeros(self.length, dtype=np.float32)
        for piece in self.pieces:
            samples = inputs[piece.item].samples[piece.first : piece.first + piece.length]
            out[piece.offset : piece.offset + piece.length] = samples
        return out

    def locate(self, start: float, end: float) -> Piece:
        """The piece a span in window seconds belongs to: most overlap, else the nearest.

        A word the model places in a gap (alignment is approximate near silence) goes to
        the piece closest to its middle.
        """
        best = max(self.pieces, key=lambda piece: piece.overlap(start, end))
        if best.overlap(start, end) > 0.0:
            return best
        middle = (start + end) / 2
        return min(self.pieces, key=lambda piece: piece.distance(middle))


def split_points(samples: np.ndarray, limit: int, search: int, frame: int) -> list[int]:
    """Cut positions that keep every part at most ``limit`` samples long.

    Each cut lies at the quietest ``frame`` within ``search`` samples before the limit, so a
    cut rarely falls inside a word.
    """
    cuts: list[int] = []
    position = 0
    total = len(samples)
    frame = max(1, min(frame, limit))
    search = max(frame, min(search, limit))
    while total - position > limit:
        lo = position + limit - search
        region = samples[lo : position + limit].astype(np.float64)
        frames = len(region) // frame
        energy = np.square(region[: frames * frame]).reshape(frames, frame).mean(axis=1)
        quietest = int(np.argmin(energy)) if frames else 0
        cut = lo + quietest * frame + frame // 2
        cut = min(max(cut, position + 1), position + limit)
        cuts.append(cut)
        position = cut
    return cuts


def pack(
    inputs: Sequence[SpeechInput],
    window_s: float = WINDOW_S,
    gap_s: float = GAP_S,
    split_search_s: float = SPLIT_SEARCH_S,
    alone: bool = False,
) -> list[Window]:
    """Greedily fill windows with the inputs in the order given.

    An input longer than a window is split (at quiet moments) into pieces that each fill at
    most one window; its last piece may share a window with the next input (unless
    ``alone``: then every input starts a window of its own). Empty inputs are skipped. All
    inputs must share one sample rate.
    """
    rates = {speech.sample_rate for speech in inputs if len(speech.samples)}
    if len(rates) > 1:
        raise ValueError(f"inputs mix sample rates {sorted(rates)}; resample them first")
    if not rates:
        return []
    rate = rates.pop()
    limit = round(window_s * rate)
    gap = round(gap_s * rate)
    if limit <= 0 or gap < 0:
        raise ValueError("window_s must be positive and gap_s not negative")
    frame = round(QUIET_FRAME_S * rate)

    windows: list[Window] = []
    pieces: list[Piece] = []
    cursor = 0

    def close() -> None:
        nonlocal pieces, cursor
        if pieces:
            windows.append(Window(tuple(pieces), cursor, rate))
        pieces, cursor = [], 0

    for item, speech in enumerate(inputs):
        samples = speech.samples
        cuts = split_points(samples, limit, round(split_search_s * rate), frame)
        for first, stop in itertools.pairwise([0, *cuts, len(samples)]):
            length = stop - first
            if length <= 0:
                continue
            lead = gap if pieces else 0
            if cursor + lead + length > limit or (alone and first == 0):
                close()
                lead = 0
            offset = cursor + lead
            pieces.append(Piece(item, offset, first, length, speech.start + first / rate, rate))
            cursor = offset + length
    close()
    return windows


def uncovered(
    window: Window,
    segments: Sequence[TranscriptSegment],
    min_s: float = RETRY_MIN_S,
    margin_s: float = RETRY_MARGIN_S,
) -> list[tuple[Piece, float, float]]:
    """Stretches of the window's pieces (media seconds) that no segment covers, ``min_s`` or
    longer, each moved ``margin_s`` away from the segments beside it.

    Greedy decoding without timestamps sometimes skips speech in a long window (its start,
    or its end after a sentence it took for the last) and says nothing about it; what voice
    activity called speech but got no words is what such a skip leaves. Words cover their
    time, each at most ``MAX_WORD_S`` up to its end: the aligner stretches the first word
    after a skip back over the skipped speech.
    """
    covered = [
        (max(w.start, w.end - MAX_WORD_S), w.end) for s in segments if s.words for w in s.words
    ] + [(s.start, s.end) for s in segments if not s.words]
    found: list[tuple[Piece, float, float]] = []
    for piece in window.pieces:
        spans = sorted(
            (max(start, piece.media_start), min(end, piece.media_end))
            for start, end in covered
            if end > piece.media_start and start < piece.media_end
        )
        cursor, lead = piece.media_start, 0.0
        for start, end in [*spans, (piece.media_end, piece.media_end)]:
            tail = margin_s if end > start else 0.0
            if start - tail - (cursor + lead) >= min_s:
                found.append((piece, cursor + lead, start - tail))
            cursor, lead = max(cursor, end), margin_s
    return found


def speech_level_db(samples: np.ndarray, frame: int = 800) -> float:
    """Level of the loud part of ``samples``: the 90th percentile of 50 ms frame RMS, in dBFS.

    Speech is loud in bursts (syllables) with quiet between them; the percentile follows the
    bursts, so a near voice and a babble of far ones differ by their distance, not their pauses.
    """
    frames = len(samples) // frame
    if frames == 0:
        return -120.0
    energy = np.square(samples[: frames * frame].astype(np.float64)).reshape(frames, frame)
    rms = float(np.sqrt(np.percentile(energy.mean(axis=1), 90)))
    return 20 * math.log10(rms) if rms > 0 else -120.0


def split_words(words: Sequence[Word], max_pause_s: float = 0.8) -> list[list[Word]]:
    """Group consecutive words into segments: a new one after a sentence end or a pause.

    Whisper's own segments stretch across silences; words and pauses do not.
    """
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if current and (
            word.start - current[-1].end > max_pause_s
            or SENTENCE_END.search(current[-1].text.strip())
        ):
            groups.append(current)
            current = []
        current.append(word)
    if current:
        groups.append(current)
    return groups


def prepare(speech: SpeechInput, sample_rate: int = SAMPLE_RATE) -> SpeechInput:
    """The same stretch as mono float32 in [-1, 1] at ``sample_rate``.

    NaN and infinite samples become silence; integer samples are scaled; two-dimensional
    input is averaged over its shorter axis (the channels); other rates are resampled
    linearly. An input with no valid rate comes back empty (and is then skipped).
    """
    samples = np.asarray(speech.samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    elif samples.ndim != 1:
        samples = samples.reshape(-1)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / float(np.iinfo(samples.dtype).max)
    elif not np.issubdtype(samples.dtype, np.floating):
        samples = samples.astype(np.float64)
    samples = np.clip(np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    rate = speech.sample_rate
    if rate <= 0:
        logger.warning("speech input at %.3fs has sample rate %s: skipped", speech.start, rate)
        samples = samples[:0]
        rate = sample_rate
    if rate != sample_rate and len(samples):
        count = max(1, round(len(samples) * sample_rate / rate))
        positions = np.arange(count) * (rate / sample_rate)
        samples = np.interp(positions, np.arange(len(samples)), samples)
    return SpeechInput(
        speech.start, samples.astype(np.float32, copy=False), sample_rate, speech.language
    )


def audible(speech: SpeechInput) -> bool:
    """Long and loud enough to be worth a model call."""
    if len(speech.samples) < MIN_SPEECH_S * speech.sample_rate:
        return False
    rms = math.sqrt(float(np.mean(np.square(speech.samples, dtype=np.float64))))
    return rms > 0 and 20 * math.log10(rms) > SILENCE_DBFS


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def looks_like_junk(text: str) -> bool:
    """Text no speaker said: empty, punctuation only, or a repetition loop."""
    stripped = text.strip()
    if not any(character.isalnum() for character in stripped):
        return True
    if compression_ratio(stripped) > MAX_COMPRESSION_RATIO:
        return True
    tokens = re.findall(r"\w+", stripped.lower())
    run = 1
    for previous, token in itertools.pairwise(tokens):
        run = run + 1 if token == previous else 1
        if run >= 4:
            return True
    return len(tokens) >= 8 and len(set(tokens)) / len(tokens) < 0.3


def words_to_segments(
    window: Window,
    words: Iterable[Word],
    language: str | None,
    keep_words: bool = True,
    min_probability: float = 0.0,
) -> list[TranscriptSegment]:
    """Words in window seconds to media-time segments, each within one piece.

    Each word goes to the piece it overlaps most (see ``Window.locate``) and is clipped to
    it, and to its last ``MAX_WORD_S``. A piece whose words have a mean probability below
    ``min_probability`` is dropped: in a packed window that is how text invented over a
    non-speech piece shows itself.
    Word texts keep their leading space until the segment text is joined, so languages
    written without spaces join correctly.
    """
    by_piece: dict[Piece, list[Word]] = {}
    for word in words:
        piece = window.locate(word.start, word.end)
        start, end = piece.to_media(word.start), piece.to_media(word.end)
        by_piece.setdefault(piece, []).append(
            Word(start, max(start, end), word.text, _unit(word.probability))
        )
    segments: list[TranscriptSegment] = []
    for piece_words in by_piece.values():
        if np.mean([word.probability for word in piece_words]) < min_probability:
            continue
        for group in split_words(piece_words):
            text = "".join(word.text for word in group).strip()
            if looks_like_junk(text):
                continue
            # The aligner stretches a word over the pause before it: a word lasts at most
            # MAX_WORD_S (after grouping, so the pause it spanned splits nothing).
            kept = tuple(
                Word(
                    max(word.start, word.end - MAX_WORD_S),
                    word.end,
                    word.text.strip(),
                    word.probability,
                )
                for word in group
                if word.text.strip()
            )
            segments.append(
                TranscriptSegment(
                    start=kept[0].start if kept else group[0].start,
                    end=group[-1].end,
                    text=text,
                    language=language,
                    words=kept if keep_words else (),
                    confidence=float(np.mean([word.probability for word in group])),
                )
            )
    return segments


def text_to_segment(
    window: Window,
    start: float,
    end: float,
    text: str,
    language: str | None,
    confidence: float = 1.0,
) -> TranscriptSegment | None:
    """A segment with only window-second bounds (no word times) as a media-time segment.

    It belongs to the piece it overlaps most and is clipped to it; with one piece in the
    window that is simply the piece (the voice-activity bounds).
    """
    text = text.strip()
    if looks_like_junk(text):
        return None
    piece = window.locate(start, end)
    media_start, media_end = piece.to_media(start), piece.to_media(end)
    if media_end <= media_start:
        media_start, media_end = piece.media_start, piece.media_end
    return TranscriptSegment(media_start, media_end, text, language, (), _unit(confidence))


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0) if math.isfinite(value) else 0.0
