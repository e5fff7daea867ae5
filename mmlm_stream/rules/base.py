"""What every event rule type is made of: its config model and its detector.

A rule type is one file of this folder (label.py, sound.py, ...): a ``RuleConfig`` subclass
with a ``type`` literal, its fields and their checks, and ``detector()``, which returns the
object the engine runs on each window: a ``ConditionDetector`` (a condition that lasts: the
engine turns its observations into one event per occurrence, with hysteresis, minimum
duration and cooldown) or a ``PointDetector`` (point events, ``start == end``). The file
is listed once in ``rules/registry.py``.

Per source, a detector keeps what it needs between windows in ``SourceState.memory`` under
its rule's name; the engine drops a source's state when it ends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.results import Label
from mmlm_stream.records.schema import EventRecord, EventType, event_id, utc_stamp
from mmlm_stream.rules.query_scoring import QueryMatch
from mmlm_stream.rules.zones import Polygon

RULE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
EPS = 1e-6

LabelModality = Literal["visual", "audio", "objects", "fusion"]
TextField = Literal["speech", "subtitles", "ocr"]

Synonyms = Callable[[str], Sequence[str]]
"""The other names of a frame label (ImageNet's by default)."""


class RuleSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
    return pattern


def check_exit(threshold: float, exit_threshold: float | None, what: str) -> None:
    if exit_threshold is not None and exit_threshold > threshold:
        raise ValueError(f"{what}exit_threshold must not exceed {what}threshold")


class RuleConfig(RuleSection):
    """A rule of ``events.rules`` (or a watch query): a rule type adds ``type: Literal[...]``,
    its fields, and ``detector``."""

    name: str = Field(
        ..., pattern=RULE_NAME, description="Unique rule name ([A-Za-z0-9_.-], 1-64 chars)."
    )
    enabled: bool = Field(True, description="False switches the rule off (e.g. a built-in one).")

    def needs_text(self) -> bool:
        """Whether the rule reads a window's transcript, its text embedding or the fusion
        head (which sees that embedding): such rules wait until a live window's speech is
        transcribed."""
        return False

    def detector(self, synonyms: Synonyms | None) -> ConditionDetector | PointDetector:
        raise NotImplementedError(f"{type(self).__name__} has no detector")


class ConditionRule(RuleConfig):
    """A rule whose condition lasts: one event per occurrence, with a start and an end."""

    min_duration_s: float = Field(
        0.0, ge=0, description="The condition must hold this long before the event is emitted."
    )
    cooldown_s: float = Field(
        0.0, ge=0, description="After an event ends, the same rule and key stay quiet this long."
    )


@dataclass(frozen=True)
class Observation:
    """What one rule saw of one key in one window."""

    score: float
    entered: bool
    held: bool
    start: float
    end: float
    description: str
    evidence: dict[str, Any]
    zone: str | None = None


@dataclass
class Open:
    """A condition that started and has not ended; ``emitted`` once it held long enough."""

    id: str
    start: float
    end: float
    first_window_start: float
    window_id: str
    wall_start: str | None
    best: Observation
    emitted: bool = False


@dataclass
class Condition:
    open: Open | None = None
    quiet_until: float = -math.inf


@dataclass
class SourceState:
    last_start: float | None = None
    last_end: float | None = None
    conditions: dict[tuple[str, str], Condition] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    """Each rule's own state between windows, under the rule's name."""


@dataclass
class Context:
    window: FusedWindow
    state: SourceState
    queries: dict[str, QueryMatch]
    zones: Mapping[str, Polygon] = field(default_factory=dict)


class ConditionDetector:
    """One rule that yields observations per key; the engine turns them into events."""

    type: EventType

    def __init__(self, rule: ConditionRule) -> None:
        self.name = rule.name
        self.min_duration_s = rule.min_duration_s
        self.cooldown_s = rule.cooldown_s

    def observe(self, ctx: Context) -> dict[str, Observation]:
        raise NotImplementedError


class PointDetector:
    """One rule that gives point events (``start == end``) straight from a window."""

    def __init__(self, rule: RuleConfig) -> None:
        self.name = rule.name
        self.rule = rule

    def events(self, window: FusedWindow, state: SourceState) -> list[EventRecord]:
        raise NotImplementedError


def wall_at(window: FusedWindow, at: float) -> str | None:
    wall = window.contents.wall_start
    return None if wall is None else utc_stamp(wall + timedelta(seconds=at - window.start))


def article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def labels_json(labels: Sequence[Label]) -> list[dict[str, Any]]:
    return [{"label": lb.label, "score": round(lb.score, 4)} for lb in labels]


def point_event(
    window: FusedWindow,
    type_: EventType,
    key: str,
    at: float,
    confidence: float,
    description: str,
    evidence: dict[str, Any],
) -> EventRecord:
    return EventRecord(
        id=event_id(window.source, type_, key, at),
        source=window.source,
        type=type_,
        key=key,
        start=round(at, 3),
        end=round(at, 3),
        confidence=float(np.clip(confidence, 0.0, 1.0)),
        description=description,
        window_id=window.window_id,
        evidence=evidence,
        wall_start=wall_at(window, at),
    )
