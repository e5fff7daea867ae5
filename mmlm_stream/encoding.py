"""The encoders of one model set behind one interface, in process.

``Encoders`` is what the analysis loop calls. ``RoleEncoders`` holds the rules shared by
every implementation (which optional roles run, at what frame rate); ``LocalEncoders`` runs
the models of the configured set in this process, and the Ray pipeline's implementation
runs them in Serve deployments, so the loop is the same in both places.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    AudioEncoding,
    DetectionResult,
    FrameEncoding,
    OcrResult,
    Role,
    SpeechInput,
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


class RoleEncoders(ABC):
    """The sampling rules of the optional roles, whatever runs the models.

    OCR and the detector see frames at their own rates (per source); subclasses only say
    how one role is run on a batch (in process, or through a Serve deployment).
    """

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

    @property
    def roles(self) -> list[Role]:
        roles = [Role.FRAMES, Role.AUDIO, Role.SPEECH, Role.TEXT]
        return roles + [Role.OCR] * self.ocr_on + [Role.DETECTOR] * self.detector_on

    @abstractmethod
    def run(self, role: Role, items: Sequence[Any]) -> Any:
        """Run ``role``'s model on a non-empty batch and return its results."""

    @abstractmethod
    def model_ids(self) -> dict[str, str]:
        """Model id per record key (visual, audio, speech, text, ocr, objects)."""

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        if not frames:
            return FrameResults([])
        encodings = self.run(Role.FRAMES, frames)
        detections: list[DetectionResult] = []
        ocr: list[OcrResult] = []
        if self.detector_on:
            due = [f for f in frames if self._detector_sampler[f.source].wants(f.time)]
            if due:
                detections = self.run(Role.DETECTOR, due)
        if self.ocr_on:
            due = [f for f in frames if self._ocr_sampler[f.source].wants(f.time)]
            if due:
                ocr = self.run(Role.OCR, due)
        return FrameResults(encodings, detections, ocr)

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return self.run(Role.AUDIO, chunks) if chunks else []

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        return self.run(Role.SPEECH, speech) if speech else []

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(Role.TEXT, texts)


def call_role(encoder: Any, role: Role, items: Sequence[Any]) -> Any:
    """The one method each role's encoder protocol exposes for a batch."""
    method = {
        Role.FRAMES: "encode",
        Role.AUDIO: "encode",
        Role.SPEECH: "transcribe",
        Role.TEXT: "embed",
        Role.OCR: "read",
        Role.DETECTOR: "detect",
    }[role]
    return getattr(encoder, method)(items)


class LocalEncoders(RoleEncoders):
    """Loads each role's model in this process on first use (through the registry)."""

    def load(self, role: Role) -> Any:
        encoder = load_encoder(role, self.models)
        if encoder is None:
            raise KeyError(f"model set '{self.models.set}' has no {role.value} model")
        return encoder

    def warm(self) -> None:
        """Load every enabled model now rather than on the first item."""
        for role in self.roles:
            self.load(role)

    def run(self, role: Role, items: Sequence[Any]) -> Any:
        return call_role(self.load(role), role, items)

    def model_ids(self) -> dict[str, str]:
        return {ROLE_RECORD_KEY[role]: self.load(role).model_id for role in self.roles}


ROLE_RECORD_KEY = {
    Role.FRAMES: "visual",
    Role.AUDIO: "audio",
    Role.SPEECH: "speech",
    Role.TEXT: "text",
    Role.OCR: "ocr",
    Role.DETECTOR: "objects",
}
