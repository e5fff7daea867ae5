import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmlm_stream.operators.loudness import (
    SILENCE_FLOOR_DBFS,
    ShortTermMeter,
    clean,
    envelope,
    loudness,
    to_dbfs,
)

SR = 16_000


def _sine(amplitude: float, seconds: float = 1.0, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_full_scale_sine_peaks_at_0_dbfs_with_rms_at_minus_3():
    level = loudness(_sine(1.0))
    assert level.peak_dbfs == pytest.approx(0.0, abs=0.01)
    assert level.rms_dbfs == pytest.approx(-3.01, abs=0.02)


def test_halving_the_amplitude_lowers_both_levels_by_6_db():
    full, half = loudness(_sine(1.0)), loudness(_sine(0.5))
    assert full.peak_dbfs - half.peak_dbfs == pytest.approx(6.02, abs=0.02)
    assert full.rms_dbfs - half.rms_dbfs == pytest.approx(6.02, abs=0.02)


@pytest.mark.parametrize(
    "samples",
    [np.zeros(SR, np.float32), np.zeros(0, np.float32), np.full(10, np.nan, np.float32)],
    ids=["digital-silence", "empty", "all-nan"],
)
def test_silence_and_empty_input_sit_at_the_finite_floor(samples):
    level = loudness(samples)
    assert level.rms_dbfs == SILENCE_FLOOR_DBFS
    assert level.peak_dbfs == SILENCE_FLOOR_DBFS


def test_nan_samples_count_as_zero():
    tone = _sine(1.0)
    holed = tone.copy()
    holed[::2] = np.nan
    zeroed = tone.copy()
    zeroed[::2] = 0.0
    assert loudness(holed) == loudness(zeroed)


def test_infinite_samples_are_full_scale_not_infinite_loudness():
    level = loudness(np.array([np.inf, -np.inf, 0.0, 0.0], np.float32))
    assert level.peak_dbfs == pytest.approx(0.0)
    assert np.isfinite(level.rms_dbfs)


def test_clean_returns_a_flat_float32_copy():
    source = np.array([[0.5, np.nan]], np.float64)
    out = clean(source)
    assert out.dtype == np.float32 and out.shape == (2,)
    assert out.tolist() == [0.5, 0.0]
    assert np.isnan(source[0, 1])


def test_to_dbfs_never_goes_below_the_floor():
    assert to_dbfs(0.0) == SILENCE_FLOOR_DBFS
    assert to_dbfs(1e-30) == SILENCE_FLOOR_DBFS
    assert to_dbfs(float("nan")) == SILENCE_FLOOR_DBFS
    assert to_dbfs(10.0) == pytest.approx(20.0)


@given(
    arrays(
        np.float32,
        st.integers(0, 300),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_levels_are_always_finite_and_rms_never_exceeds_peak(samples):
    level = loudness(samples)
    assert np.isfinite(level.rms_dbfs) and np.isfinite(level.peak_dbfs)
    assert level.rms_dbfs >= SILENCE_FLOOR_DBFS and level.peak_dbfs >= SILENCE_FLOOR_DBFS
    assert level.rms_dbfs <= level.peak_dbfs + 1e-6


def test_short_term_level_is_the_loudest_400_ms_not_the_average():
    burst = np.zeros(4 * SR, np.float32)
    burst[SR : 2 * SR] = _sine(0.6)  # 1 s at -7.4 dBFS RMS inside 4 s of silence
    level = loudness(burst, SR)
    assert level.short_term_dbfs == pytest.approx(-7.4, abs=0.1)
    assert level.rms_dbfs == pytest.approx(-13.5, abs=0.1)


def test_short_term_meter_measures_a_burst_across_chunk_boundaries_at_any_rate():
    rate = 48_000
    audio = np.zeros(3 * rate, np.float32)
    audio[int(0.8 * rate) : int(1.3 * rate)] = 0.5  # 500 ms straddling the 1 s boundary
    meter = ShortTermMeter()
    steps = []
    for i in range(0, audio.size, 1024):
        steps += meter.push(audio[i : i + 1024], rate, 0.0 if i == 0 else None)
    assert [round(s.end, 1) for s in steps] == [round(0.1 * k, 1) for k in range(1, 31)]
    assert max(s.short_term_dbfs or -120 for s in steps) == pytest.approx(-6.02, abs=0.05)
    loud = [round(s.end, 1) for s in steps if s.block_dbfs > -10]
    assert loud == [0.9, 1.0, 1.1, 1.2, 1.3]


def test_the_envelope_gives_the_level_of_each_100_ms():
    samples = np.zeros(SR, np.float32)
    samples[3200:4800] = 1.0
    levels = envelope(samples, SR)
    assert len(levels) == 10 and levels[2] == pytest.approx(0.0) and levels[0] == SILENCE_FLOOR_DBFS
