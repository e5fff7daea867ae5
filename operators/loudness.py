"""Loudness of an audio chunk in dBFS (full scale = 1.0), pure numpy.

Silence and empty input give a finite floor rather than ``-inf`` so the values can go
straight into JSON records and running statistics. A full-scale sine has a peak of 0 dBFS
and an RMS of -3 dBFS (plain ``20 log10(rms)``, no AES +3 dB sine correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILENCE_FLOOR_DBFS = -120.0


@dataclass(frozen=True, slots=True)
class Loudness:
    rms_dbfs: float
    peak_dbfs: float


def clean(samples: np.ndarray) -> np.ndarray:
    """float32 1-D copy with NaN as 0 and infinities at full scale, so no value poisons a sum."""
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    return np.nan_to_num(flat, nan=0.0, posinf=1.0, neginf=-1.0)


def to_dbfs(amplitude: float) -> float:
    """``20 log10(amplitude)``, never below ``SILENCE_FLOOR_DBFS``."""
    if not amplitude > 0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 20.0 * float(np.log10(amplitude)))


def loudness(samples: np.ndarray) -> Loudness:
    """RMS and peak level of ``samples``; NaN samples count as 0."""
    flat = clean(samples)
    if flat.size == 0:
        return Loudness(SILENCE_FLOOR_DBFS, SILENCE_FLOOR_DBFS)
    wide = flat.astype(np.float64)
    rms = float(np.sqrt(np.mean(wide * wide)))
    peak = float(np.max(np.abs(wide)))
    return Loudness(to_dbfs(rms), to_dbfs(peak))
