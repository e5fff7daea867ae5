"""``type: scene_change``: a point event where consecutive frames differ (cosine distance,
computed by fusion)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.rules.base import (
    EPS,
    PointDetector,
    RuleConfig,
    SourceState,
    Synonyms,
    point_event,
)


class SceneChangeRule(RuleConfig):
    """Consecutive frames differ (cosine distance, computed by fusion); one point event each."""

    type: Literal["scene_change"] = "scene_change"
    threshold: float = Field(
        0.35, ge=0, le=2, description="Cosine distance between consecutive frames that counts."
    )
    cooldown_s: float = Field(0.0, ge=0, description="Least media time between two changes.")

    def detector(self, synonyms: Synonyms | None) -> SceneChangeDetector:
        return SceneChangeDetector(self)


class SceneChangeDetector(PointDetector):
    rule: SceneChangeRule

    def events(self, window: FusedWindow, state: SourceState) -> list[EventRecord]:
        if window.scene_change < self.rule.threshold:
            return []
        at = window.scene_change_at if window.scene_change_at is not None else window.start
        last = state.memory.get(self.name)
        if last is not None and (at <= last + EPS or at - last < self.rule.cooldown_s - EPS):
            return []
        state.memory[self.name] = at
        return [
            point_event(
                window,
                "scene_change",
                "scene_change",
                at,
                window.scene_change,
                "The scene changes.",
                {"visual": {"distance": round(window.scene_change, 4)}},
            )
        ]
