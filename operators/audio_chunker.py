"""Resample any audio to 16 kHz mono float32 and cut it into contiguous fixed-length chunks."""

from __future__ import annotations

import logging

import av
import numpy as np

from mmlm_stream.channels import AUDIO_SAMPLE_RATE, AudioChunk

logger = logging.getLogger(__name__)

# A jump in input timestamps larger than this is a real gap (filled with silence) rather
# than timestamp jitter.
GAP_TOLERANCE_S = 0.05
# Gaps up to this long are filled with silence; a longer one restarts the chunks at the new
# time (a corrupt timestamp must not become a gap-sized allocation).
MAX_FILL_S = 60.0


class AudioChunker:
    """Keeps a sample counter so chunk start times are exact, with no gaps or overlaps.

    The first input frame fixes the sample index of the stream start; after that, start
    times are derived from the number of samples emitted, never from per-frame timestamps.
    Gaps in the input (dropped packets) are filled with silence so audio stays aligned with
    media time, up to ``max_fill_s``; beyond it the pending audio goes out as a shorter chunk
    and chunks continue from the new time. Overlapping input is trimmed.
    """

    def __init__(
        self,
        source: str,
        chunk_s: float = 1.0,
        sample_rate: int = AUDIO_SAMPLE_RATE,
        max_fill_s: float = MAX_FILL_S,
    ) -> None:
        self.source = source
        self.sample_rate = sample_rate
        self.max_fill = round(max_fill_s * sample_rate)
        self.chunk_samples = max(1, round(chunk_s * sample_rate))
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self._origin: int | None = None
        self._emitted = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._index = 0

    @property
    def pending_start(self) -> float | None:
        """Media time of the first sample not yet emitted (None before any input)."""
        if self._origin is None:
            return None
        return (self._origin + self._emitted) / self.sample_rate

    @property
    def _next_input_sample(self) -> int:
        assert self._origin is not None
        return self._origin + self._emitted + self._pending_len

    def push(self, frame: av.AudioFrame, time: float | None) -> list[AudioChunk]:
        """Add one decoded frame at media ``time`` (None: continues the previous one)."""
        chunks: list[AudioChunk] = []
        if self._origin is None:
            self._origin = round((time or 0.0) * self.sample_rate)
        elif time is not None:
            drift = time * self.sample_rate - self._next_input_sample
            if drift > self.max_fill:
                logger.info(
                    "%s: audio gap of %.1fs not filled", self.source, drift / self.sample_rate
                )
                chunks = self._cut(final=True)
                self._origin = round(time * self.sample_rate) - self._emitted
            elif drift > GAP_TOLERANCE_S * self.sample_rate:
                self._append(np.zeros(int(drift), dtype=np.float32))
            elif drift < -GAP_TOLERANCE_S * self.sample_rate:
                logger.debug(
                    "%s: dropped audio overlapping by %.3fs", self.source, -drift / self.sample_rate
                )
                return []
        for out in self._resampler.resample(frame):
            self._append(out.to_ndarray().reshape(-1))
        return chunks + self._cut(final=False)

    def flush(self) -> list[AudioChunk]:
        """Emit what the resampler still holds and the final, shorter chunk."""
        if self._origin is None:
            return []
        for out in self._resampler.resample(None):
            self._append(out.to_ndarray().reshape(-1))
        chunks = self._cut(final=True)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        return chunks

    def restart_at(self, time: float) -> None:
        """Continue at a later media time (after a reconnect or loop), keeping chunk indices."""
        self._pending, self._pending_len = [], 0
        self._origin = round(time * self.sample_rate)
        self._emitted = 0

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pending.append(samples.astype(np.float32, copy=False))
            self._pending_len += samples.size

    def _cut(self, final: bool) -> list[AudioChunk]:
        if self._pending_len < self.chunk_samples and not (final and self._pending_len):
            return []
        buffer = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        chunks = []
        offset = 0
        while buffer.size - offset >= self.chunk_samples or (final and offset < buffer.size):
            piece = buffer[offset : offset + self.chunk_samples]
            chunks.append(
                AudioChunk(
                    source=self.source,
                    start=(self._origin + self._emitted) / self.sample_rate,
                    samples=piece.copy(),
                    sample_rate=self.sample_rate,
                    index=self._index,
                )
            )
            self._index += 1
            self._emitted += piece.size
            offset += piece.size
        rest = buffer[offset:]
        self._pending = [rest] if rest.size else []
        self._pending_len = rest.size
        return chunks
