"""Published records (SPEC section 4): one window per stretch of time, discrete events.

These are the product contract: JSON, one object per line in files, a versioned
``schema`` field, ``published_at`` stamped when a record leaves the process.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WINDOW_SCHEMA = "mmlm.window/1"
EVENT_SCHEMA = "mmlm.event/1"

EventType = Literal[
    "label", "query", "speech", "keyword", "sound", "scene_change", "stream", "fusion"
]


def window_id(source: str, start: float) -> str:
    """``{source}:{start_ms}``: the same input and config give the same ids."""
    return f"{source}:{round(start * 1000)}"


def event_id(source: str, type_: str, key: str, start: float) -> str:
    """Deterministic from (source, type, key, start_ms) so a re-run overwrites, never duplicates."""
    digest = hashlib.sha1(f"{source}|{type_}|{key}|{round(start * 1000)}".encode()).hexdigest()
    return f"{source}:{type_}:{digest[:16]}"


def utc_stamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-28T13:40:00.123Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelScore(_Record):
    label: str
    score: float = Field(ge=0, le=1)


class SpeechText(_Record):
    start: float
    end: float
    text: str


class Speech(_Record):
    text: str = ""
    segments: list[SpeechText] = Field(default_factory=list)


class WindowRecord(_Record):
    schema_: Literal["mmlm.window/1"] = Field(WINDOW_SCHEMA, alias="schema")
    source: str
    window_id: str
    start: float
    end: float
    wall_start: str | None = None
    visual: list[LabelScore] = Field(default_factory=list)
    audio: list[LabelScore] = Field(default_factory=list)
    speech: Speech = Field(default_factory=Speech)
    subtitles: list[SpeechText] = Field(default_factory=list)
    ocr: list[str] = Field(default_factory=list)
    objects: list[LabelScore] = Field(default_factory=list)
    fusion: list[LabelScore] = Field(
        default_factory=list, description="Classes of the trained fusion head (fusion:<class>)."
    )
    description: str = ""
    events: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list, description="Channels present in it.")
    models: dict[str, str] = Field(default_factory=dict)
    published_at: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


class EventRecord(_Record):
    schema_: Literal["mmlm.event/1"] = Field(EVENT_SCHEMA, alias="schema")
    id: str
    source: str
    type: EventType
    key: str
    start: float
    end: float
    confidence: float = Field(ge=0, le=1)
    description: str
    window_id: str
    ongoing: bool = Field(
        False, description="True while the condition holds; a closing update follows."
    )
    evidence: dict[str, Any] = Field(default_factory=dict)
    wall_start: str | None = None
    published_at: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)
