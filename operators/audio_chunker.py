"""Resample any audio to 16 kHz mono float32 and cut it into contiguous fixed-length chunks.

Before resampling, each frame's native-rate mono samples go to a ``ToneTracker`` (tones.py)
and a ``ShortTermMeter`` (loudness.py); the chunks carry the tonal peaks found (the one look
at the audio above 8 kHz), the loudest 400 ms measured across chunk boundaries, and the level
of each 100 ms (the envelope), all at full bandwidth.
"""

from __future__ import annotations

import logging

import av
import numpy as np

from mmlm_stream.operators.loudness import MeterStep, ShortTermMeter
from mmlm_stream.operators.tones import ToneTracker
from mmlm_stream.records.channels import AUDIO_SAMPLE_RATE, AudioChunk, Tone

logger = logging.getLogger(__name__)

# A jump in input timestamps larger than this is a real gap (filled with silence) rather
# than timestamp jitter.
GAP_TOLERANCE_S = 0.05
# Native-rate frames whose times differ from the held ones' end by more than this start a
# new block for the tone tracker and level meter (which restart there, as per frame).
CONTINUITY_TOLERANCE_S = 0.02
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
        self._tracker = ToneTracker()
        self._native: av.AudioResampler | None = None
        self._native_rate = 0
        self._tones: list[Tone] = []
        self._meter = ShortTermMeter()
        self._levels: list[MeterStep] = []
        self._native_held: list[np.ndarray] = []
        self._native_len = 0
        self._native_start = 0.0  # media time of the first held native sample
        self._native_time: float | None = None  # the time the held block was given, if any

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
        self._track_tones(frame, time)
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
        self._native_held, self._native_len = [], 0
        self._tracker.reset()
        self._tones = []
        self._meter.reset()
        self._levels = []

    def _track_tones(self, frame: av.AudioFrame, time: float | None) -> None:
        """Native-rate mono samples of ``frame``, held for the tone tracker and level meter.

        They are measured in blocks (``_measure_native``, before each cut), not per codec
        frame: an AAC frame is 21 ms, and per-frame calls cost more than the measuring.
        """
        rate = int(frame.sample_rate or 0)
        if rate <= 0 or frame.samples == 0:
            return
        if self._native is None or rate != self._native_rate:
            self._measure_native()
            self._native = av.AudioResampler(format="flt", layout="mono", rate=rate)
            self._native_rate = rate
        elif time is not None and self._native_held:
            expected = self._native_start + self._native_len / rate
            if abs(time - expected) > CONTINUITY_TOLERANCE_S:
                self._measure_native()
        first = True
        for out in self._native.resample(frame):
            samples = out.to_ndarray().reshape(-1)
            if not self._native_held:
                self._native_start = time if first and time is not None else self._native_end
                self._native_time = time if first else None
            self._native_held.append(samples)
            self._native_len += samples.size
            first = False

    @property
    def _native_end(self) -> float:
        return self._native_start + self._native_len / max(self._native_rate, 1)

    def _measure_native(self) -> None:
        """The held native-rate samples into the tone tracker and the level meter."""
        if not self._native_held:
            return
        held = self._native_held
        samples = np.concatenate(held) if len(held) > 1 else held[0]
        at = self._native_time
        self._native_held, self._native_len = [], 0
        self._native_start += samples.size / max(self._native_rate, 1)
        self._tones += self._tracker.push(samples, self._native_rate, at)
        self._levels += self._meter.push(samples, self._native_rate, at)

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pending.append(samples.astype(np.float32, copy=False))
            self._pending_len += samples.size

    def _cut(self, final: bool) -> list[AudioChunk]:
        if self._pending_len < self.chunk_samples and not (final and self._pending_len):
            return []
        self._measure_native()
        buffer = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        chunks = []
        offset = 0
        while buffer.size - offset >= self.chunk_samples or (final and offset < buffer.size):
            piece = buffer[offset : offset + self.chunk_samples]
            start = (self._origin + self._emitted) / self.sample_rate
            end = start + piece.size / self.sample_rate
            last = final and offset + piece.size >= buffer.size
            tones = tuple(t for t in self._tones if last or t.time < end)
            self._tones = [t for t in self._tones if not (last or t.time < end)]
            steps = [m for m in self._levels if last or m.end <= end + 1e-6]
            self._levels = [m for m in self._levels if not (last or m.end <= end + 1e-6)]
            levels = [m.short_term_dbfs for m in steps if m.short_term_dbfs is not None]
            chunks.append(
                AudioChunk(
                    source=self.source,
                    start=start,
                    samples=piece.copy(),
                    sample_rate=self.sample_rate,
                    index=self._index,
                    tones=tones,
                    short_term_dbfs=max(levels) if levels else None,
                    envelope_dbfs=tuple(round(m.block_dbfs, 1) for m in steps),
                )
            )
            self._index += 1
            self._emitted += piece.size
            offset += piece.size
        rest = buffer[offset:]
        self._pending = [rest] if rest.size else []
        self._pending_len = rest.size
        return chunks
