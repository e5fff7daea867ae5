"""What every Whisper recogniser here shares: utterances packed into 30 s windows.

Whisper pads each call to 30 s, so the recognisers pack several utterances into one window
(``operators/speech_packing``), decode ``batch_size`` windows per call, and map the results
back to each utterance's media time. Subclasses only decode windows and turn one window's
result into transcript segments.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmlm_stream.config import SpeechModelConfig
from mmlm_stream.models.roles import SpeechInput, TranscriptSegment
from mmlm_stream.operators.speech_packing import SAMPLE_RATE, Window, audible, pack, prepare


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
        inputs = [item for item in map(prepare, speech) if audible(item)]
        windows = pack(inputs)
        segments: list[TranscriptSegment] = []
        language = self._config.language
        with self._lock:
            for first in range(0, len(windows), self._batch_size):
                batch = windows[first : first + self._batch_size]
                decoded, language = self._decode([w.audio(inputs) for w in batch], language)
                for window, result in zip(batch, decoded, strict=True):
                    segments.extend(self._segments(window, result, language))
        return sorted(segments, key=lambda segment: (segment.start, segment.end))

    @abstractmethod
    def _decode(self, audios: Sequence[np.ndarray], language: str | None) -> tuple[list[Any], str]:
        """Decode a batch of windows; returns their results and the language used."""

    @abstractmethod
    def _segments(self, window: Window, result: Any, language: str) -> list[TranscriptSegment]:
        """One window's result as transcript segments in media time."""
