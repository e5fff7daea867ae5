"""Section ``window``: how media time is cut into windows."""

from __future__ import annotations

from pydantic import Field, model_validator

from mmlm_stream.config.section import Section


class WindowConfig(Section):
    """How media time is cut into windows (contract §3)."""

    window_s: float = Field(4.0, gt=0, description="Length of a window in seconds.")
    hop_s: float = Field(2.0, gt=0, description="Step between window starts; = window_s: tumbling.")
    max_lateness_s: float = Field(
        5.0, gt=0, description="Live sources: close a window this long (wall time) after its end."
    )
    top_k: int = Field(5, ge=1, description="Labels per modality kept in a window record.")
    smoothing: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="How slowly a label's score decays from one window to the next.",
    )

    @model_validator(mode="after")
    def _hop_fits(self) -> WindowConfig:
        if self.hop_s > self.window_s:
            raise ValueError("hop_s must not exceed window_s")
        return self
