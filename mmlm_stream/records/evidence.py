"""Encoder results on their way through windowing and fusion (internal, not published).

``WindowContents`` is what the windowing operator closes; ``FusedWindow`` is what fusion
makes of it and what the describer, the event engine and the fusion head consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    DetectionResult,
    FrameEncoding,
    Label,
    OcrResult,
    SeenObject,
    TimeSpan,
    TranscriptSegment,
)
from mmlm_stream.records.schema import window_id

Evidence = (
    FrameEncoding | AudioEncoding | TranscriptSegment | SubtitleCue | OcrResult | DetectionResult
)

MODALITY_OF: dict[type, Modality] = {
    FrameEncoding: Modality.VISUAL,
    AudioEncoding: Modality.AUDIO,
    TranscriptSegment: Modality.SPEECH,
    SubtitleCue: Modality.SUBTITLES,
    OcrResult: Modality.OCR,
    DetectionResult: Modality.OBJECTS,
}


def span_of(item: Evidence) -> tuple[float, float]:
    """Media-time extent: instants for frames/OCR/detections, intervals for the rest."""
    if isinstance(item, FrameEncoding | OcrResult | DetectionResult):
        return item.time, item.time
    return item.start, item.end


@dataclass(frozen=True)
class WindowContents:
    """Everything that fell into one window, by channel."""

    source: str
    start: float
    end: float
    items: dict[Modality, tuple[Evidence, ...]]
    present: frozenset[Modality]
    wall_start: datetime | None = None

    @property
    def window_id(self) -> str:
        return window_id(self.source, self.start)

    def of(self, channel: Modality) -> tuple[Evidence, ...]:
        return self.items.get(channel, ())


@dataclass(frozen=True, slots=True)
class HeardSound:
    """A named sound in a window (operators/sounds.py): key, best score, extent of the
    evidence, whether it lasted (``lasting``: several consecutive patches or a beeping tone
    pattern), and the tags or tone that showed it."""

    key: str
    score: float
    start: float
    end: float
    lasting: bool = False
    evidence: tuple[Label, ...] = ()


@dataclass(frozen=True)
class FusedWindow:
    """Pooled evidence of one window plus the fused vector the fusion head classifies."""

    contents: WindowContents
    visual: tuple[Label, ...] = ()
    objects: tuple[SeenObject, ...] = ()
    audio: tuple[Label, ...] = ()
    rms_dbfs: float | None = None
    peak_dbfs: float | None = None
    short_term_dbfs: float | None = None
    sounds: tuple[HeardSound, ...] | None = None
    """Named sounds from patch-level evidence; None when the audio encoder gave none."""
    speech_spans: tuple[TimeSpan, ...] = ()
    transcript: tuple[TranscriptSegment, ...] = ()
    subtitles: tuple[SubtitleCue, ...] = ()
    ocr: tuple[str, ...] = ()
    frame_mean: np.ndarray | None = field(default=None, repr=False)
    frame_max: np.ndarray | None = field(default=None, repr=False)
    audio_mean: np.ndarray | None = field(default=None, repr=False)
    text_mean: np.ndarray | None = field(default=None, repr=False)
    fused: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    scene_change: float = 0.0
    scene_change_at: float | None = None
    extra_labels: tuple[Label, ...] = ()

    @property
    def source(self) -> str:
        return self.contents.source

    @property
    def start(self) -> float:
        return self.contents.start

    @property
    def end(self) -> float:
        return self.contents.end

    @property
    def window_id(self) -> str:
        return self.contents.window_id

    @property
    def speech_text(self) -> str:
        return " ".join(seg.text.strip() for seg in self.transcript if seg.text.strip())

    @property
    def subtitle_text(self) -> str:
        return " ".join(cue.text.replace("\n", " ") for cue in self.subtitles)
