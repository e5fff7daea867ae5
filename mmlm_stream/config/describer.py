"""Section ``describer``: how each window's sentence is written (templates or a local LM)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DescriberConfig(BaseModel):
    """How each window's ``description`` is written (section ``describer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["template", "lm"] = Field(
        "template",
        description="template: fixed sentences from the evidence; lm: a local language model "
        "rewrites them (falls back to the template on any problem).",
    )
    lm_path: Path | None = Field(
        None,
        description="Local transformers text-generation model folder (kind: lm); never downloaded.",
    )
    lm_device: str = Field("cpu", description="Where the language model runs: auto, cpu, cuda.")
    lm_max_new_tokens: int = Field(
        40, ge=8, le=200, description="Most tokens the language model may write per window."
    )
    min_visual_score: float = Field(
        0.3, ge=0, le=1, description="A frame label family (summed scores) is named from this."
    )
    min_object_score: float = Field(
        0.5, ge=0, le=1, description="A detected object is named from this score."
    )
    max_visual_concepts: int = Field(
        2, ge=1, le=5, description="Most things named as in view per window."
    )
    min_audio_score: float = Field(
        0.3, ge=0, le=1, description="A known sound (alarm, music, dog...) is named from this."
    )
    min_other_audio_score: float = Field(
        0.6, ge=0, le=1, description="Any other sound tag is named only from this score."
    )
    min_fusion_score: float = Field(
        0.5, ge=0, le=1, description="A fusion:<class> label is named from this score."
    )
    min_speech_confidence: float = Field(
        0.2, ge=0, le=1, description="Transcript segments less confident than this are ignored."
    )
    max_quote_chars: int = Field(
        80, ge=16, le=500, description="Quoted speech or subtitles are cut at a word to this."
    )
    max_ocr_chars: int = Field(
        50, ge=16, le=500, description="Quoted on-screen text is cut at a word to this."
    )
    min_ocr_chars: int = Field(
        3, ge=1, description="On-screen text lines with fewer letters or digits are ignored."
    )
    quiet_dbfs: float = Field(
        -50.0, le=0, description="A window this quiet (RMS) with nothing else is 'quiet'."
    )
    continuity: bool = Field(
        True,
        description="Say what goes on ('still in view') instead of repeating the "
        "previous window of the source.",
    )
    max_sources: int = Field(
        4096, ge=1, description="Sources remembered for continuity; the least recent is dropped."
    )
