"""Section ``models``: which model set runs, where, and per-modality settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from mmlm_stream.config.section import Section
from mmlm_stream.records.modality import LEGACY

logger = logging.getLogger(__name__)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmlm-stream"


class EncoderConfig(Section):
    """Settings every encoder modality shares; null means "use the model set's / global value"."""

    model: str | None = Field(
        None, description="Model id or local folder replacing the model set's choice."
    )
    device: str | None = Field(
        None, description="auto, cpu, cuda or cuda:N (default: models.device)."
    )
    dtype: str | None = Field(
        None, description="auto, float32, float16 or bfloat16 (default: models.dtype)."
    )
    batch_size: int = Field(8, ge=1, description="Items per inference call.")


class VisualModelConfig(EncoderConfig):
    batch_size: int = Field(
        4, ge=1, description="Frames per inference call (4 measured fastest on CPU; more on GPU)."
    )
    top_k: int = Field(5, ge=1, description="Labels kept per frame.")
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Zero-shot label vocabulary (hub set); empty = the built-in list.",
    )


class AudioModelConfig(EncoderConfig):
    batch_size: int = Field(8, ge=1, description="Audio chunks per inference call.")
    top_k: int = Field(5, ge=1, description="Tags kept per patch and per chunk.")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability threshold.")
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Zero-shot sound vocabulary (hub set, CLAP); empty = the built-in list.",
    )


class SpeechModelConfig(EncoderConfig):
    batch_size: int = Field(4, ge=1, description="30 s speech windows per inference call.")
    language: str | None = Field(None, description="Spoken language (e.g. 'en'); null = detect.")
    word_timestamps: bool = Field(True, description="Include word times in transcripts.")
    beam_size: int = Field(1, ge=1, description="Beam width of decoding (1 = greedy).")


class TextModelConfig(EncoderConfig):
    batch_size: int = Field(32, ge=1, description="Texts per inference call.")


class OcrModelConfig(EncoderConfig):
    enabled: bool = Field(False, description="Read on-screen text (slow on CPU).")
    fps: float = Field(0.2, gt=0, description="Frames per second of media given to OCR.")
    min_score: float = Field(0.5, ge=0, le=1, description="Drop text read with less confidence.")
    batch_size: int = Field(1, ge=1, description="Frames per OCR call.")


class ObjectsModelConfig(EncoderConfig):
    enabled: bool = Field(
        True, description="Detect people and objects when the set has a detector."
    )
    fps: float = Field(1.0, gt=0, description="Frames per second of media given to the detector.")
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum detection score.")
    batch_size: int = Field(4, ge=1, description="Frames per detector call.")
    gated: bool = Field(
        True,
        description="Detect only frames where something may be there: motion since the last "
        "detected frame once the camera's own pan and zoom are taken out, new picture panned "
        "into view, a zoom past 1.15x, an animal or person appearing in the frame labels, or "
        "refresh_s passed; other frames keep the last detections, moved with the camera.",
    )
    refresh_s: float = Field(
        10.0, gt=0, description="Gated: detect at least this often (media seconds) anyway."
    )


class ModelsConfig(Section):
    """Which model set runs, where, and per-modality overrides (contract §8)."""

    set: str = Field("default", description="Model set: default, hub or tiny.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    dtype: str = Field("auto", description="auto (fp16/bf16 on GPU, fp32 on CPU) or explicit.")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where assembled weights (Whisper base) and tiny models are kept.",
    )
    allow_download: bool = Field(
        False, description="Let the hub set download missing weights (never by default)."
    )
    visual: VisualModelConfig = Field(default_factory=VisualModelConfig)
    audio: AudioModelConfig = Field(default_factory=AudioModelConfig)
    speech: SpeechModelConfig = Field(default_factory=SpeechModelConfig)
    text: TextModelConfig = Field(default_factory=TextModelConfig)
    ocr: OcrModelConfig = Field(default_factory=OcrModelConfig)
    objects: ObjectsModelConfig = Field(default_factory=ObjectsModelConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, data: Any) -> Any:
        """``frames``/``detector`` were the old names of ``visual``/``objects``: accepted with
        a warning, an error when both spellings are given."""
        if not isinstance(data, dict) or not LEGACY.keys() & data.keys():
            return data
        data = dict(data)
        for old, new in LEGACY.items():
            if old not in data:
                continue
            if new.value in data:
                raise ValueError(
                    f"models.{old} and models.{new.value} are the same section; keep {new.value}"
                )
            logger.warning("config: models.%s is now models.%s", old, new.value)
            data[new.value] = data.pop(old)
        return data
