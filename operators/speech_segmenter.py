"""Cut the audio that voice-activity detection marked as speech into recogniser inputs.

Whisper is costly per call and invents words on non-speech, so only speech goes in, as
whole utterances: a run of speech spans (gaps under ``join_gap_s`` bridged) becomes one
``SpeechInput`` when it ends, or when it reaches ``max_s`` so a monologue is not held back.
Such a cut falls at the quietest moment of the run's last ``cut_search_s`` (a breath between
words, or the target voice's pause under babble, where voice activity never ends), and the
rest of the run goes on into the next input: a cut at a fixed length lands inside a word,
which then belongs to neither side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mmlm_stream.records.channels import AudioChunk
from mmlm_stream.records.results import AudioEncoding, SpeechInput


@dataclass
class _Run:
    start: float
    end: float
    pieces: list[np.ndarray] = field(default_factory=list)


class SpeechSegmenter:
    """Per source: feed chunks with their encodings in time order, get utterances out."""

    def __init__(
        self,
        join_gap_s: float = 0.6,
        max_s: float = 28.0,
        pad_s: float = 0.15,
        sample_rate: int = 16_000,
        cut_search_s: float = 5.0,
    ) -> None:
        self.join_gap_s = join_gap_s
        self.max_s = max_s
        self.cut_search_s = min(cut_search_s, max_s / 2)
        self.pad_s = pad_s
        self.sample_rate = sample_rate
        self._run: _Run | None = None
        self._tail: AudioChunk | None = None
        self._taken_until = float("-inf")
        self._want_end = float("-inf")

    def push(self, chunk: AudioChunk, encoding: AudioEncoding) -> list[SpeechInput]:
        out: list[SpeechInput] = []
        if self._run is not None and self._want_end > chunk.start:
            self._take(chunk, chunk.start, min(self._want_end, chunk.end))  # trailing pad
        for span in encoding.speech:
            start = max(self._taken_until, span.start - self.pad_s)
            if self._run is not None and start - self._run.end > self.join_gap_s:
                out.append(self._emit())
            if self._run is None:
                self._run = _Run(start, start)
                if start < chunk.start and self._tail is not None:
                    self._take(self._tail, start, chunk.start)  # leading pad
            self._want_end = span.end + self.pad_s
            self._take(chunk, self._run.end if self._run.pieces else start, self._want_end)
            if self._run.end - self._run.start >= self.max_s - 1e-9:
                out.append(self._cut())
        if self._run is not None and chunk.end - self._want_end > self.join_gap_s:
            out.append(self._emit())
        self._tail = chunk
        return out

    @property
    def pending_start(self) -> float | None:
        """Start of the utterance still being collected (its transcript is not out yet)."""
        return self._run.start if self._run is not None else None

    def flush(self) -> list[SpeechInput]:
        return [self._emit()] if self._run is not None else []

    def _take(self, chunk: AudioChunk, start: float, end: float) -> None:
        assert self._run is not None
        a = max(0, round((start - chunk.start) * self.sample_rate))
        b = min(len(chunk.samples), round((end - chunk.start) * self.sample_rate))
        if b > a:
            if not self._run.pieces:
                self._run.start = chunk.start + a / self.sample_rate
            self._run.pieces.append(chunk.samples[a:b])
            self._run.end = chunk.start + b / self.sample_rate
            self._taken_until = self._run.end

    def _cut(self) -> SpeechInput:
        """The run up to its quietest 50 ms near the end; the rest stays as the open run."""
        assert self._run is not None
        run = self._run
        samples = np.concatenate(run.pieces).astype(np.float32, copy=False)
        frame = max(1, round(0.05 * self.sample_rate))
        lo = max(0, len(samples) - round(self.cut_search_s * self.sample_rate))
        frames = (len(samples) - lo) // frame
        if frames < 2:
            return self._emit()
        region = samples[lo : lo + frames * frame].astype(np.float64)
        energy = np.square(region).reshape(frames, frame).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        self._run = _Run(run.start + cut / self.sample_rate, run.end, [samples[cut:]])
        return SpeechInput(run.start, samples[:cut], self.sample_rate)

    def _emit(self) -> SpeechInput:
        assert self._run is not None
        run, self._run = self._run, None
        samples = np.concatenate(run.pieces) if run.pieces else np.zeros(0, np.float32)
        return SpeechInput(run.start, samples.astype(np.float32, copy=False), self.sample_rate)


def utterances(
    chunks: Sequence[AudioChunk], encodings: Sequence[AudioEncoding]
) -> list[SpeechInput]:
    """All utterances of a finished stretch of audio (chunks and encodings in order)."""
    segmenter = SpeechSegmenter()
    out: list[SpeechInput] = []
    for chunk, encoding in zip(chunks, encodings, strict=True):
        out.extend(segmenter.push(chunk, encoding))
    return out + segmenter.flush()
