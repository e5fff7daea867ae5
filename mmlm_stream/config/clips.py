"""Section ``clips``: a short MP4 per event of a live stream, cut without re-encoding."""

from __future__ import annotations

from pydantic import Field, model_validator

from mmlm_stream.config.section import Section


class ClipsConfig(Section):
    """Seconds before and after an event's start, copied from a rolling buffer of the
    stream's encoded packets (kept with the snapshots, same retention)."""

    enabled: bool = Field(False, description="Cut a clip for each event of a live stream.")
    before_s: float = Field(5.0, ge=0, le=60, description="Seconds before the event's start.")
    after_s: float = Field(5.0, ge=0, le=60, description="Seconds after the event's start.")
    buffer_mb: float = Field(
        64, gt=0, description="Most encoded video and audio held per stream for clips."
    )

    @model_validator(mode="after")
    def _something(self) -> ClipsConfig:
        if self.before_s + self.after_s <= 0:
            raise ValueError("a clip needs before_s or after_s above 0")
        return self
