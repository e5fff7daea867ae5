"""High tones at the source's native rate: find them in the decoder, read their pattern later.

The 16 kHz models hear nothing above 8 kHz, and the resampler's filter already fades what lies
just below. Alarm clocks and beepers often sit up there (one real alarm clock is a pure 8.2 kHz
tone), so the decoder looks at the native-rate audio before resampling: every ``HOP_S`` it
keeps the strongest spectral peak between ``MIN_HZ`` and the top of the band when it stands
``MIN_PROMINENCE_DB`` above the band's median power (a sine stands 40-90 dB above, the real
alarm clock 61-119, noise about 10 and synthesised speech's high formant peaks up to 30, which
once made the sample's voice an alarm) and is at least ``MIN_DBFS``. Only these small
``Tone`` records travel on the audio chunks, never the 48 kHz samples.

``tone_pattern`` reads the tones of a window: a tone that comes back at the same pitch at least
``ALARM_ONSETS`` times over ``ALARM_SPAN_S`` or more, with no pause longer than ``MAX_PAUSE_S``,
is an alarm ("beep beep beep ..."); a shorter burst is a beep; one steady tone that never stops
(equipment whine) is neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmlm_stream.records.channels import Tone

HOP_S = 0.05
FRAME_S = 0.046
MIN_HZ = 4_000.0
MAX_HZ = 20_000.0
MIN_PROMINENCE_DB = 35.0
MIN_DBFS = -50.0
CONTINUITY_TOLERANCE_S = 0.02

SAME_PITCH = 0.03
"""Relative frequency difference within which two tones are the same pitch."""
ALARM_ONSETS = 3
ALARM_SPAN_S = 1.9
MAX_PAUSE_S = 1.5
MAX_BEEP_S = 1.5
"""A tone on without a break for longer than this is a steady tone, not a beep."""


class ToneTracker:
    """Tonal peaks of one continuous native-rate stream, on its own ``HOP_S`` grid."""

    def __init__(self) -> None:
        self._rate = 0
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0.0  # media time of _buffer[0]
        self._window = np.zeros(0, np.float32)
        self._band = slice(0, 0)
        self._freqs = np.zeros(0)

    def reset(self) -> None:
        self._buffer = np.zeros(0, np.float32)
        self._rate = 0

    def _configure(self, rate: int) -> None:
        size = 1 << max(8, round(math.log2(FRAME_S * rate)))
        self._rate = rate
        self._window = np.hanning(size).astype(np.float32)
        self._freqs = np.fft.rfftfreq(size, 1.0 / rate)
        top = min(MAX_HZ, 0.95 * rate / 2)
        inside = np.flatnonzero((self._freqs >= MIN_HZ) & (self._freqs <= top))
        self._band = slice(int(inside[0]), int(inside[-1]) + 1) if inside.size > 8 else slice(0, 0)

    def push(self, samples: np.ndarray, rate: int, time: float | None) -> list[Tone]:
        """Tones of the frames that ``samples`` (mono float32 at ``rate``, first sample at
        media ``time``; None: right after the previous ones) complete."""
        if rate != self._rate:
            self._configure(rate)
            self._buffer = np.zeros(0, np.float32)
            self._buffer_start = time or 0.0
        elif time is not None:
            expected = self._buffer_start + self._buffer.size / rate
            if abs(time - expected) > CONTINUITY_TOLERANCE_S:
                self._buffer = np.zeros(0, np.float32)
                self._buffer_start = time
        if self._band.stop == 0:
            return []
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        size, hop = self._window.size, max(1, round(HOP_S * rate))
        count = 0 if self._buffer.size < size else 1 + (self._buffer.size - size) // hop
        if count == 0:
            return []
        frames = np.lib.stride_tricks.sliding_window_view(self._buffer, size)[::hop][:count]
        spectra = np.abs(np.fft.rfft(frames * self._window, axis=1))[:, self._band]
        power = spectra * spectra
        peaks = np.argmax(power, axis=1)
        rows = np.arange(count)
        peak_power = power[rows, peaks]
        median = np.maximum(np.median(power, axis=1), 1e-30)
        prominence = 10 * np.log10(np.maximum(peak_power, 1e-30) / median)
        amplitude = 4.0 * spectra[rows, peaks] / self._window.sum() / 2.0
        tones = []
        for k in range(count):
            dbfs = 20 * math.log10(max(float(amplitude[k]), 1e-12))
            if prominence[k] >= MIN_PROMINENCE_DB and dbfs >= MIN_DBFS:
                tones.append(
                    Tone(
                        time=round(self._buffer_start + (k * hop + size / 2) / rate, 4),
                        hz=round(float(self._freqs[self._band][peaks[k]]), 1),
                        dbfs=round(dbfs, 1),
                        prominence_db=round(float(prominence[k]), 1),
                    )
                )
        used = count * hop
        self._buffer = self._buffer[used:].copy()
        self._buffer_start += used / rate
        return tones


@dataclass(frozen=True, slots=True)
class TonePattern:
    """What a run of tones at one pitch amounts to."""

    kind: Literal["alarm", "beep"]
    hz: float
    start: float
    end: float
    onsets: int
    score: float


def _score(prominence_db: float) -> float:
    """0.5 at the detection threshold (20 dB), 1.0 from 30 dB up."""
    return float(np.clip(0.5 + (prominence_db - MIN_PROMINENCE_DB) / 20.0, 0.0, 1.0))


def _bursts(times: list[float]) -> list[tuple[float, float]]:
    """(start, end) of each stretch of frames without a missing frame."""
    bursts: list[tuple[float, float]] = []
    for t in times:
        if bursts and t - bursts[-1][1] <= 1.5 * HOP_S:
            bursts[-1] = (bursts[-1][0], t)
        else:
            bursts.append((t, t))
    half = HOP_S / 2
    return [(a - half, b + half) for a, b in bursts]


def _rank(pattern: TonePattern) -> tuple[bool, int, float]:
    return pattern.kind == "alarm", pattern.onsets, pattern.score


def tone_pattern(tones: Iterable[Tone]) -> TonePattern | None:
    """The strongest pattern among ``tones`` (any order, duplicates allowed): an alarm if a
    pitch beeps on and off long enough, else a beep if one sounds briefly, else None."""
    unique = sorted({round(t.time, 3): t for t in tones}.values(), key=lambda t: t.time)
    tracks: list[list[Tone]] = []
    for tone in unique:
        for track in tracks:
            if abs(tone.hz - track[0].hz) <= SAME_PITCH * track[0].hz:
                track.append(tone)
                break
        else:
            tracks.append([tone])
    best: TonePattern | None = None
    for track in tracks:
        bursts = [b for b in _bursts([t.time for t in track]) if b[1] - b[0] <= MAX_BEEP_S]
        if not bursts:
            continue
        score = _score(float(np.median([t.prominence_db for t in track])))
        hz = float(np.median([t.hz for t in track]))
        runs: list[list[tuple[float, float]]] = [[bursts[0]]]
        for burst in bursts[1:]:
            if burst[0] - runs[-1][-1][1] <= MAX_PAUSE_S:
                runs[-1].append(burst)
            else:
                runs.append([burst])
        for run in runs:
            start, end = run[0][0], run[-1][1]
            alarm = len(run) >= ALARM_ONSETS and end - start >= ALARM_SPAN_S
            found = TonePattern("alarm" if alarm else "beep", hz, start, end, len(run), score)
            if best is None or _rank(found) > _rank(best):
                best = found
    return best
