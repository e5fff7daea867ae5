"""YAMNet's log-mel front end in plain numpy, so the audio model needs neither TF nor torch.

It reproduces ``yamnet/features.py`` exactly: a periodic Hann window of 25 ms, hop 10 ms,
FFT size 512, magnitude (not power) spectrum, TensorFlow's HTK mel matrix (64 bands,
125-7500 Hz, DC bin excluded) and ``log(mel + 0.001)``. Patches are 96 frames (0.96 s) on a
48-frame (0.48 s) hop, so one patch needs ``PATCH_SAMPLES`` = 15,600 samples (0.975 s).
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_SIZE = 512
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
PATCH_HOP_FRAMES = 48
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP_SAMPLES
PATCH_SECONDS = PATCH_FRAMES * HOP_SAMPLES / SAMPLE_RATE
PATCH_HOP_SECONDS = PATCH_HOP_SAMPLES / SAMPLE_RATE


def _hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hertz, dtype=np.float64) / 700.0)


@functools.cache
def mel_matrix() -> np.ndarray:
    """TensorFlow's ``linear_to_mel_weight_matrix``: (FFT_SIZE // 2 + 1, MEL_BANDS) float32."""
    bins = FFT_SIZE // 2 + 1
    linear_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:])[:, None]
    edges = np.linspace(_hertz_to_mel(MEL_LOW_HZ), _hertz_to_mel(MEL_HIGH_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slopes = (linear_mel - lower) / (centre - lower)
    upper_slopes = (upper - linear_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.vstack([np.zeros((1, MEL_BANDS)), weights]).astype(np.float32)


@functools.cache
def _hann() -> np.ndarray:
    n = np.arange(WINDOW_SAMPLES)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / WINDOW_SAMPLES)).astype(np.float32)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Log-mel frames of 16 kHz mono audio: (frames, MEL_BANDS) float32, no padding."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    count = 1 + (len(samples) - WINDOW_SAMPLES) // HOP_SAMPLES
    if count < 1:
        return np.zeros((0, MEL_BANDS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::HOP_SAMPLES]
    spectrum = np.abs(np.fft.rfft(frames[:count] * _hann(), n=FFT_SIZE)).astype(np.float32)
    # einsum, not BLAS: this product is tiny, a threaded BLAS made it ~50x slower on busy
    # cores, and the result must not depend on how many frames are computed at once.
    mel = np.einsum("ft,tm->fm", spectrum, mel_matrix())
    return np.log(mel + LOG_OFFSET).astype(np.float32)


def patches(samples: np.ndarray) -> np.ndarray:
    """Every whole YAMNet patch of ``samples`` on the 0.48 s grid: (n, 1, 96, 64) float32.

    Patch ``k`` starts at sample ``k * PATCH_HOP_SAMPLES``; audio too short for a whole patch
    gives none (the caller keeps it and waits for more, rather than padding with zeros).
    """
    frames = log_mel(samples)
    count = (
        0 if len(frames) < PATCH_FRAMES else 1 + (len(frames) - PATCH_FRAMES) // PATCH_HOP_FRAMES
    )
    out = np.empty((count, 1, PATCH_FRAMES, MEL_BANDS), np.float32)
    for k in range(count):
        start = k * PATCH_HOP_FRAMES
        out[k, 0] = frames[start : start + PATCH_FRAMES]
    return out
