"""Section ``snapshots``: a JPEG per event, kept on disk with retention by age and size."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from mmlm_stream.config.section import Section


def default_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mmlm-stream" / "snapshots"


class SnapshotsConfig(Section):
    """Evidence per event: the frame where its condition was strongest, boxes drawn."""

    enabled: bool = Field(True, description="Write a snapshot for each event (not stream ones).")
    dir: Path | None = Field(
        None,
        description="Where they are kept; null = <--out>/snapshots for describe, else "
        "$XDG_DATA_HOME/mmlm-stream/snapshots (on a cluster: a volume the nodes and the API "
        "share).",
    )
    max_age_s: float = Field(7 * 86_400, gt=0, description="Older snapshots are deleted.")
    max_total_mb: float = Field(
        512, gt=0, description="Beyond this size in all, the oldest snapshots are deleted."
    )
    quality: int = Field(85, ge=10, le=95, description="JPEG quality.")

    keep_s: float = Field(
        30.0,
        gt=0,
        description="Media seconds of frames held per source to choose from (the frames are "
        "the decoded ones: decode.frame_short_side sets their size).",
    )

    def folder(self) -> Path:
        return self.dir if self.dir is not None else default_dir()
