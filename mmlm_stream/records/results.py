"""The encoder modalities and their typed results: the contract between models and the pipeline.

Every model file implements one of these protocols; the pipeline only sees the results.
Scores are always in [0, 1]; embeddings are float32 and L2-normalised; times are media
seconds taken from the channel items that went in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mmlm_stream.records.channels import AudioChunk, Frame, Tone
from mmlm_stream.records.modality import Modality


@dataclass(frozen=True, slots=True)
class Label:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class FrameEncoding:
    time: float
    embedding: np.ndarray = field(repr=False)
    labels: tuple[Label, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeSpan:
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class AudioTags:
    """AudioSet-style tags of one analysis patch (YAMNet: 0.96 s, hop 0.48 s)."""

    start: float
    end: float
    labels: tuple[Label, ...]


@dataclass(frozen=True, slots=True)
class AudioEncoding:
    """What one audio chunk sounds like.

    ``short_term_dbfs`` is the loudest ~400 ms of the chunk (RMS; None: not measured), so a
    short burst is not averaged away; ``envelope_dbfs`` the RMS of each 100 ms from ``start``
    (how long a sound lasts); ``tones`` are the chunk's native-rate tonal peaks.
    """

    start: float
    end: float
    rms_dbfs: float
    peak_dbfs: float
    speech: tuple[TimeSpan, ...] = ()
    patches: tuple[AudioTags, ...] = ()
    labels: tuple[Label, ...] = ()
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    short_term_dbfs: float | None = None
    envelope_dbfs: tuple[float, ...] = ()
    tones: tuple[Tone, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeechInput:
    """A stretch of 16 kHz mono audio that voice-activity detection marked as speech."""

    start: float
    samples: np.ndarray = field(repr=False)
    sample_rate: int = 16_000
    language: str | None = None
    """The language its source was last heard in, when the caller knows it: a recogniser
    then skips detection, and may pack it with other sources' speech of that language."""

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    language: str | None = None
    words: tuple[Word, ...] = ()
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class OcrText:
    text: str
    box: tuple[tuple[float, float], ...]
    score: float


@dataclass(frozen=True, slots=True)
class OcrResult:
    time: float
    texts: tuple[OcrText, ...] = ()


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width/height


@dataclass(frozen=True, slots=True)
class SeenObject(Label):
    """A window's label of the ``objects`` modality: its best detection's box and frame time."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class DetectionResult:
    time: float
    detections: tuple[Detection, ...] = ()


@runtime_checkable
class Encoder(Protocol):
    model_id: str

    def warmup(self) -> None: ...


@runtime_checkable
class FrameEncoder(Encoder, Protocol):
    embedding_dim: int

    def encode(self, frames: Sequence[Frame]) -> list[FrameEncoding]: ...

    def score_queries(self, frames: Sequence[Frame], texts: Sequence[str]) -> np.ndarray:
        """Scores in [0, 1] of shape (len(frames), len(texts))."""
        ...


@runtime_checkable
class AudioEncoder(Encoder, Protocol):
    embedding_dim: int

    def encode(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]: ...


@runtime_checkable
class SpeechRecognizer(Encoder, Protocol):
    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]: ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    embedding_dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 of shape (len(texts), embedding_dim); blank texts: zeros."""
        ...


@runtime_checkable
class OcrReader(Encoder, Protocol):
    def read(self, frames: Sequence[Frame]) -> list[OcrResult]: ...


@runtime_checkable
class ObjectDetector(Encoder, Protocol):
    def detect(self, frames: Sequence[Frame]) -> list[DetectionResult]: ...


ENCODER_PROTOCOLS: dict[Modality, type] = {
    Modality.VISUAL: FrameEncoder,
    Modality.AUDIO: AudioEncoder,
    Modality.SPEECH: SpeechRecognizer,
    Modality.TEXT: TextEncoder,
    Modality.OCR: OcrReader,
    Modality.OBJECTS: ObjectDetector,
}


LABEL_PREFIX = "fusion:"
