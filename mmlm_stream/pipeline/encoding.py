"""The encoders of one model set behind one interface, in process.

``Encoders`` is what the analysis loop calls. ``ModalityEncoders`` holds the rules shared by
every implementation (which optional modalities run, at what frame rate); ``LocalEncoders`` runs
the models of the configured set in this process, and the Ray pipeline's implementation
runs them in Serve deployments, so the loop is the same in both places.

The detector (the costliest frame model on CPU) only sees a frame due at its rate when
something may be there that it has not seen: ``operators.detector_gate`` has the rule. Frames
it skips get the detections of the frame it last ran on, moved with the camera, so a still
scene keeps its objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import enabled_modalities, load_encoder
from mmlm_stream.operators.camera_motion import View
from mmlm_stream.operators.detector_gate import DetectorGate, Judgement
from mmlm_stream.operators.frame_sampler import FrameSampler
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    DetectionResult,
    FrameEncoding,
    OcrResult,
    SpeechInput,
    TranscriptSegment,
)


@dataclass(frozen=True)
class FrameResults:
    encodings: list[FrameEncoding]
    detections: list[DetectionResult] = field(default_factory=list)
    ocr: list[OcrResult] = field(default_factory=list)


def _living_labels() -> frozenset[str]:
    """ImageNet's animal classes (0-397) and its people (ballplayer, groom, scuba diver)."""
    try:
        from mmlm_stream.records.imagenet_labels import imagenet_classes

        classes = imagenet_classes()
    except ImportError:
        return frozenset()
    people = {981, 982, 983}
    return frozenset(c.label for c in classes if c.index <= 397 or c.index in people)


class Encoders(Protocol):
    channels: frozenset[Modality]

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults: ...

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]: ...

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]: ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def model_ids(self) -> dict[str, str]: ...


class ModalityEncoders(ABC):
    """The sampling rules of the optional modalities, whatever runs the models.

    OCR and the detector see frames at their own rates (per source); subclasses only say
    how one modality is run on a batch (in process, or through a Serve deployment).
    """

    def __init__(self, models: ModelsConfig) -> None:
        self.models = models
        self._roles = enabled_modalities(models)
        channels = {Modality.VISUAL, Modality.AUDIO, Modality.SPEECH, Modality.SUBTITLES}
        self.ocr_on = Modality.OCR in self._roles
        self.detector_on = Modality.OBJECTS in self._roles
        if self.ocr_on:
            channels.add(Modality.OCR)
        if self.detector_on:
            channels.add(Modality.OBJECTS)
        self.channels = frozenset(channels)
        self._ocr_sampler: dict[str, FrameSampler] = defaultdict(
            lambda: FrameSampler(models.ocr.fps)
        )
        self._detector_sampler: dict[str, FrameSampler] = defaultdict(
            lambda: FrameSampler(models.objects.fps)
        )
        living = _living_labels() if self.detector_on and models.objects.gated else frozenset()
        self._detector_gate: dict[str, DetectorGate] = defaultdict(
            lambda: DetectorGate(models.objects.refresh_s, living)
        )
        self.detector_runs = 0
        """Frames the detector actually saw (the rest were gated; see ``DetectorGate``)."""

    @property
    def modalities(self) -> list[Modality]:
        return list(self._roles)

    @abstractmethod
    def run(self, modality: Modality, items: Sequence[Any]) -> Any:
        """Run ``modality``'s model on a non-empty batch and return its results."""

    @abstractmethod
    def model_ids(self) -> dict[str, str]:
        """Model id per record key (visual, audio, speech, text, ocr, objects)."""

    def encode_frames(self, frames: Sequence[Frame]) -> FrameResults:
        if not frames:
            return FrameResults([])
        encodings = self.run(Modality.VISUAL, frames)
        detections: list[DetectionResult] = []
        ocr: list[OcrResult] = []
        if self.detector_on:
            by_frame = dict(zip(map(id, frames), encodings, strict=True))
            due = [f for f in frames if self._detector_sampler[f.source].wants(f.time)]
            if due:
                detections = self._detect(due, by_frame)
        if self.ocr_on:
            due = [f for f in frames if self._ocr_sampler[f.source].wants(f.time)]
            if due:
                ocr = self.run(Modality.OCR, due)
        return FrameResults(encodings, detections, ocr)

    def _detect(
        self, due: Sequence[Frame], encodings: dict[int, FrameEncoding]
    ) -> list[DetectionResult]:
        """Detections of every due frame, the detector run only where the gate says so.

        Frames of one source in a batch are judged in order, each against the last frame
        detected before it; a skipped frame whose reference is in this batch gets its result.
        """
        if not self.models.objects.gated:
            self.detector_runs += len(due)
            return self.run(Modality.OBJECTS, due)
        results: dict[int, DetectionResult] = {}
        pending: list[tuple[Frame, View]] = []
        reference: dict[str, Frame] = {}  # per source: the last frame sent in this batch
        follows: list[tuple[Frame, Frame, Judgement]] = []
        for frame in due:
            gate = self._detector_gate[frame.source]
            encoding = encodings.get(id(frame))
            judgement, seen = gate.judge(frame, encoding)
            if judgement.detect:
                pending.append((frame, seen))
                reference[frame.source] = frame
                gate.detected(frame, seen, encoding, ())  # later ones are judged by it
            elif frame.source in reference:
                follows.append((frame, reference[frame.source], judgement))
            else:
                results[id(frame)] = gate.carried(frame, judgement)
        if pending:
            self.detector_runs += len(pending)
            found = self.run(Modality.OBJECTS, [frame for frame, _ in pending])
            for (frame, seen), result in zip(pending, found, strict=True):
                gate = self._detector_gate[frame.source]  # in order: the last one stays
                gate.detected(frame, seen, encodings.get(id(frame)), result.detections)
                results[id(frame)] = result
        for frame, ref, judgement in follows:
            results[id(frame)] = judgement.carry(frame.time, results[id(ref)].detections)
        return [results[id(frame)] for frame in due]

    def encode_audio(self, chunks: Sequence[AudioChunk]) -> list[AudioEncoding]:
        return self.run(Modality.AUDIO, chunks) if chunks else []

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        return self.run(Modality.SPEECH, speech) if speech else []

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(Modality.TEXT, texts)


def call_role(encoder: Any, modality: Modality, items: Sequence[Any]) -> Any:
    """The one method each modality's encoder protocol exposes for a batch."""
    method = {
        Modality.VISUAL: "encode",
        Modality.AUDIO: "encode",
        Modality.SPEECH: "transcribe",
        Modality.TEXT: "embed",
        Modality.OCR: "read",
        Modality.OBJECTS: "detect",
    }[modality]
    return getattr(encoder, method)(items)


def call_role_per_request(
    encoder: Any, modality: Modality, requests: Sequence[Sequence[Any]]
) -> list[Any]:
    """One model call for several callers' items; each caller's results, in its order.

    Every modality answers one result per item except speech: a recogniser returns transcript
    segments, as many as it heard (an utterance may be two sentences, a noise none), so a
    merged call could not be split back by item counts (the surplus segments were lost, and
    a segment could reach the wrong source). A recogniser with ``transcribe_many`` answers
    per caller itself (packing callers of one known language together, see
    ``PackedWhisper``); any other is called once per caller.
    """
    if modality is Modality.SPEECH:
        many = getattr(encoder, "transcribe_many", None)
        if many is not None:
            return [list(found) for found in many(requests)]
        return [list(call_role(encoder, modality, items)) if items else [] for items in requests]
    flat = [item for items in requests for item in items]
    results = call_role(encoder, modality, flat)
    out, start = [], 0
    for items in requests:
        out.append(results[start : start + len(items)])
        start += len(items)
    return out


class LocalEncoders(ModalityEncoders):
    """Loads each modality's model in this process on first use (through the registry)."""

    def load(self, modality: Modality) -> Any:
        encoder = load_encoder(modality, self.models)
        if encoder is None:
            raise KeyError(f"model set '{self.models.set}' has no {modality.value} model")
        return encoder

    def warm(self) -> None:
        """Load every enabled model now rather than on the first item."""
        for modality in self.modalities:
            self.load(modality)

    def run(self, modality: Modality, items: Sequence[Any]) -> Any:
        return call_role(self.load(modality), modality, items)

    def model_ids(self) -> dict[str, str]:
        return {modality.value: self.load(modality).model_id for modality in self.modalities}
