"""The encoders of one model set behind one interface, in process.

``Encoders`` is what the analysis loop calls; ``LocalEncoders`` loads the models of the
configured set through the registry (once per process). The Ray pipeline provides the same
interface backed by deployments, so the loop is the same in both places.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mmlm_stream.channels import AudioChunk, Frame
from mmlm_stream.config import ModelsConfig
from mmlm_stream.evidence import Channel
from mmlm_stream.models.registry import load_encoder, roles_of
from mmlm_stream.models.roles import (
    AudioEncoder,
    AudioEncoding,
    DetectionResult,
    FrameEncoder,
    FrameEncoding,
    ObjectDetector,
    OcrReader,
    OcrResult,
    Role,
    SpeechInput,
    SpeechRecognizer,
    TextEncoder,
    TranscriptSegment,
)
from mmlm_stream.operators.frame_sampler import FrameSampler


@dataclass(frozen=True)
class FrameResults:
    encodings: list[FrameEncoding]
    detections: list[DetectionResult] = field(default_factory=list)
    ocr: list[OcrResult] = field(default_factory=list)


class Encoders(Protocol):
    channels: frozenset[Channel]

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults: ...

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]: ...

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]: ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def model_ids(self) -> dict[str, str]: ...


class LocalEncoders:
    """Loads each role on first use; OCR and the detector see frames at their own rates."""

    def __init__(self, models: ModelsConfig) -> None:
        self.models = models
        roles = set(roles_of(models.set))
        channels = {Channel.FRAMES, Channel.AUDIO, Channel.SPEECH, Channel.SUBTITLES}
        self.ocr_on = Role.OCR in roles and models.ocr.enabled
        self.detector_on = Role.DETECTOR in roles and models.detector.enabled
        if self.ocr_on:
            channels.add(Channel.OCR)
        if self.detector_on:
            channels.add(Channel.OBJECTS)
        self.channels = frozenset(channels)
        self._ocr_sampler: dict[str, FrameSampler] = defaultdict(
            lambda: FrameSampler(models.ocr.fps)
        )
        self._detector_sampler: dict[str, FrameSampler] = defaultdict(
            lambda: FrameSampler(models.detector.fps)
        )

    def _load(self, role: Role) -> Any:
        encoder = load_encoder(role, self.models)
        if encoder is None:
            raise KeyError(f"model set '{self.models.set}' has no {role.value} model")
        return encoder

    @property
    def frames(self) -> FrameEncoder:
        return self._load(Role.FRAMES)

    @property
    def audio(self) -> AudioEncoder:
        return self._load(Role.AUDIO)

    @property
    def speech(self) -> SpeechRecognizer:
        return self._load(Role.SPEECH)

    @property
    def text(self) -> TextEncoder:
        return self._load(Role.TEXT)

    def warm(self) -> None:
        """Load every enabled model now rather than on the first item."""
        for role in (Role.FRAMES, Role.AUDIO, Role.SPEECH, Role.TEXT):
            self._load(role)
        if self.ocr_on:
            self._load(Role.OCR)
        if self.detector_on:
            self._load(Role.DETECTOR)

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        if not frames:
            return FrameResults([])
        encodings = self.frames.encode(frames)
        detections: list[DetectionResult] = []
        ocr: list[OcrResult] = []
        if self.detector_on:
            due = [f for f in frames if self._detector_sampler[f.source].wants(f.time)]
            if due:
                detector: ObjectDetector = self._load(Role.DETECTOR)
                detections = detector.detect(due)
        if self.ocr_on:
            due = [f for f in frames if self._ocr_sampler[f.source].wants(f.time)]
            if due:
                reader: OcrReader = self._load(Role.OCR)
                ocr = reader.read(due)
        return FrameResults(encodings, detections, ocr)

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return self.audio.encode(chunks) if chunks else []

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        return self.speech.transcribe(speech) if speech else []

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.text.embed(texts)

    def model_ids(self) -> dict[str, str]:
        ids = {
            "visual": self.frames.model_id,
            "audio": self.audio.model_id,
            "speech": self.speech.model_id,
            "text": self.text.model_id,
        }
        if self.detector_on:
            ids["objects"] = self._load(Role.DETECTOR).model_id
        if self.ocr_on:
            ids["ocr"] = self._load(Role.OCR).model_id
        return ids
