"""Section ``fusion``: the user's trained fusion head."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FusionConfig(BaseModel):
    """The user's trained fusion head, applied to every window (section ``fusion``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    head: Path | None = Field(
        None, description="Head trained with `train-fusion` (.safetensors); null = no head."
    )
    min_score: float = Field(
        0.5, ge=0, le=1, description="Report a class only when its probability reaches this."
    )
    top_k: int = Field(3, ge=1, description="Most classes reported per window.")
