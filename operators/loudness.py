"""Loudness of an audio chunk in dBFS (full scale = 1.0), pure numpy.

Silence and empty input give a finite floor rather than ``-inf`` so the values can go
straight into JSON records and running statistics. A full-scale sine has a peak of 0 dBFS
and an RMS of -3 dBFS (plain ``20 log10(rms)``, no AES +3 dB sine correction).

``short_term_dbfs`` is the RMS of the loudest ``SHORT_TERM_S`` (400 ms, the EBU "momentary"
span, unweighted) on a 100 ms grid: a 1 s crash at -7 dBFS in a 4 s window is -7 here while
the window's RMS is -13, and speech (-30 to -18 dBFS RMS) stays near -15 or below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILENCE_FLOOR_DBFS = -120.0
SHORT_TERM_S = 0.4
SHORT_TERM_HOP_S = 0.1


@dataclass(frozen=True, slots=True)
class Loudness:
    rms_dbfs: float
    peak_dbfs: float
    short_term_dbfs: float = SILENCE_FLOOR_DBFS


def clean(samples: np.ndarray) -> np.ndarray:
    """float32 1-D copy with NaN as 0 and infinities at full scale, so no value poisons a sum."""
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    return np.nan_to_num(flat, nan=0.0, posinf=1.0, neginf=-1.0)


def to_dbfs(amplitude: float) -> float:
    """``20 log10(amplitude)``, never below ``SILENCE_FLOOR_DBFS``."""
    if not amplitude > 0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 20.0 * float(np.log10(amplitude)))


def _short_term_power(power: np.ndarray, sample_rate: int) -> float:
    """Largest mean power over ``SHORT_TERM_S`` windows every ``SHORT_TERM_HOP_S`` (the last
    window ends at the last sample, so none is left out); the whole input when shorter."""
    size = max(1, round(SHORT_TERM_S * sample_rate))
    if power.size <= size:
        return float(np.mean(power))
    hop = max(1, round(SHORT_TERM_HOP_S * sample_rate))
    total = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.append(np.arange(0, power.size - size + 1, hop), power.size - size)
    return float(np.max(total[starts + size] - total[starts]) / size)


def loudness(samples: np.ndarray, sample_rate: int = 16_000) -> Loudness:
    """RMS, peak and short-term level of ``samples``; NaN samples count as 0."""
    flat = clean(samples)
    if flat.size == 0:
        return Loudness(SILENCE_FLOOR_DBFS, SILENCE_FLOOR_DBFS, SILENCE_FLOOR_DBFS)
    wide = flat.astype(np.float64)
    power = wide * wide
    rms = float(np.sqrt(np.mean(power)))
    peak = float(np.max(np.abs(wide)))
    short = float(np.sqrt(max(0.0, _short_term_power(power, sample_rate))))
    return Loudness(to_dbfs(rms), to_dbfs(peak), min(to_dbfs(short), to_dbfs(peak)))


ENVELOPE_STEP_S = 0.1


def envelope(samples: np.ndarray, sample_rate: int = 16_000) -> tuple[float, ...]:
    """RMS in dBFS of each consecutive ``ENVELOPE_STEP_S`` block (the last one may be shorter):
    how long a sound lasts, which 0.96 s tag patches on a 0.48 s grid cannot tell."""
    flat = clean(samples).astype(np.float64)
    step = max(1, round(ENVELOPE_STEP_S * sample_rate))
    return tuple(
        round(to_dbfs(float(np.sqrt(np.mean(np.square(flat[i : i + step]))))), 1)
        for i in range(0, flat.size, step)
    )


@dataclass(frozen=True, slots=True)
class MeterStep:
    """Levels at the end of one ``SHORT_TERM_HOP_S`` step of a stream (media time ``end``)."""

    end: float
    short_term_dbfs: float | None
    """The last ``SHORT_TERM_S`` (None until the stream is that long)."""
    block_dbfs: float
    """The last ``SHORT_TERM_HOP_S``."""


class ShortTermMeter:
    """Levels of one continuous stream at any rate: every ``SHORT_TERM_HOP_S`` the RMS of the
    last ``SHORT_TERM_S`` (a burst across a chunk boundary is measured whole) and of the last
    ``SHORT_TERM_HOP_S`` (the envelope).

    The decoder runs it on the native-rate audio, where broadband sounds keep the energy that
    a 16 kHz resample removes (white noise loses two thirds of its power there).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._rate = 0
        self._origin = 0.0  # media time of the stream's sample 0
        self._count = 0  # samples received
        self._power = np.zeros(0, np.float64)  # the last samples' power, ending at _count
        self._next_end = 0  # stream sample index where the next span ends

    def push(self, samples: np.ndarray, rate: int, time: float | None) -> list[MeterStep]:
        """One ``MeterStep`` for each ``SHORT_TERM_HOP_S`` that ``samples`` complete."""
        if rate <= 0:
            return []
        size, hop = round(SHORT_TERM_S * rate), max(1, round(SHORT_TERM_HOP_S * rate))
        expected = self._origin + self._count / max(self._rate, 1)
        if rate != self._rate or (time is not None and abs(time - expected) > 0.02):
            self.reset()
            self._rate, self._origin, self._next_end = rate, time or 0.0, hop
        flat = clean(samples).astype(np.float64)
        self._power = np.concatenate([self._power, flat * flat])
        self._count += flat.size
        held_from = self._count - self._power.size
        total = np.concatenate([[0.0], np.cumsum(self._power)])
        steps = []
        while self._next_end <= self._count:
            end = self._next_end - held_from
            block = (total[end] - total[end - hop]) / hop
            short = None
            if self._next_end >= size:
                short = to_dbfs(float(np.sqrt((total[end] - total[end - size]) / size)))
            at = self._origin + self._next_end / rate
            steps.append(MeterStep(at, short, to_dbfs(float(np.sqrt(block)))))
            self._next_end += hop
        keep = self._count - (self._next_end - size)
        self._power = self._power[max(0, self._power.size - keep) :]
        return steps
