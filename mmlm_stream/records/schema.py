"""Published records (contract §4): one window per stretch of time, discrete events.

These are the product contract: JSON, one object per line in files, a versioned
``schema`` field, ``published_at`` stamped when a record leaves the process.

Versioning of ``mmlm.window/1`` and ``mmlm.event/1``: a field's meaning never changes within
``/1``; producers may add optional fields and new event types, so readers ignore unknown
fields (keeping them: ``to_json()`` writes them back) and deliver unknown event types
(``known_type`` is False) instead of dropping them. A breaking change is ``/2``, published
beside ``/1`` for one release; a ``/1`` reader does not understand ``/2`` (``UnreadableRecord``),
and a consumer group sends such entries to its dead letters, ``{prefix}:dead:{group}``.

Two ways in, so the leniency stays on the reading side: building a record in this code
(constructor, ``model_validate``, ``model_validate_json``) is strict, an unknown field or
event type is refused; ``read_json``/``read`` is the reading path for records from the bus
or from files another version may have written.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

WINDOW_SCHEMA = "mmlm.window/1"
EVENT_SCHEMA = "mmlm.event/1"

EventType = Literal[
    "label", "query", "speech", "keyword", "sound", "scene_change", "stream", "fusion"
]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))

_READING = "mmlm_stream.records.schema.reading"
_MAX_REASONS = 4


class UnreadableRecord(ValueError):
    """A record this reader does not understand; ``reason`` is one line, for dead letters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reading(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and info.context.get(_READING) is True


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    missing = [".".join(str(part) for part in e["loc"]) for e in errors if e["type"] == "missing"]
    parts = [f"missing {', '.join(missing)}"] if missing else []
    for error in (e for e in errors if e["type"] != "missing"):
        if len(parts) == _MAX_REASONS:
            parts.append("...")
            break
        parts.append(f"{'.'.join(str(part) for part in error['loc']) or 'record'}: {error['msg']}")
    return " ".join("; ".join(parts).split())


def window_id(source: str, start: float) -> str:
    """``{source}:{start_ms}``: the same input and config give the same ids."""
    return f"{source}:{round(start * 1000)}"


def utterance_id(source: str, start: float) -> str:
    """``{source}:speech:{start_ms}``: one id per utterance, the same on every re-run."""
    return f"{source}:speech:{round(start * 1000)}"


def event_id(source: str, type_: str, key: str, start: float) -> str:
    """Deterministic from (source, type, key, start_ms) so a re-run overwrites, never duplicates."""
    digest = hashlib.sha1(f"{source}|{type_}|{key}|{round(start * 1000)}".encode()).hexdigest()
    return f"{source}:{type_}:{digest[:16]}"


def utc_stamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-28T13:40:00.123Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Record(BaseModel):
    """Extra fields are stored (``extra="allow"``) so that a reader keeps them, but only the
    reading path may bring any: anywhere else an unknown field is refused, as with
    ``extra="forbid"``."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not _reading(info):
            known = set(cls.model_fields) | {
                field.alias for field in cls.model_fields.values() if field.alias
            }
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise PydanticCustomError(
                    "extra_forbidden",
                    "Extra inputs are not permitted: {names}",
                    {"names": ", ".join(unknown)},
                )
        return data


class _Published(_Record):
    """A top-level record with a ``schema``: strict to build, lenient to read."""

    @classmethod
    def read_json(cls, raw: str | bytes | bytearray) -> Self:
        """A record as another version may have written it (module docstring); raises
        ``UnreadableRecord`` for what is not JSON, another schema or misses required fields."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # includes a UnicodeDecodeError
            raise UnreadableRecord(f"not JSON: {exc}") from None
        return cls.read(data)

    @classmethod
    def read(cls, data: Any) -> Self:
        """``read_json`` of JSON already decoded."""
        if not isinstance(data, dict):
            raise UnreadableRecord(f"not a JSON object but {type(data).__name__}")
        expected = cls.model_fields["schema_"].default
        schema = data.get("schema", expected)
        if schema != expected:
            raise UnreadableRecord(f"schema {schema!r}: this reader understands {expected}")
        try:
            return cls.model_validate(data, context={_READING: True})
        except ValidationError as exc:
            raise UnreadableRecord(_one_line(exc)) from None

    def to_json(self) -> str:
        """One line of JSON, with any unknown fields it was read with."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


class LabelScore(_Record):
    label: str
    score: float = Field(ge=0, le=1)


class ObjectScore(LabelScore):
    """A detected label with the box of its best detection in the window."""

    box: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] of the best detection, as fractions of the frame's "
        "width and height (0 = left/top, 1 = right/bottom).",
    )


class SpeechText(_Record):
    """A timed text: a subtitle cue, or (in ``speech.segments``) an utterance."""

    start: float = Field(description="Start in media seconds (an utterance's true start).")
    end: float = Field(description="End in media seconds (an utterance's true end).")
    text: str = Field(description="The cue's text, or the whole utterance's text.")
    utterance_id: str | None = Field(
        None,
        description="In speech.segments: the utterance's id, ``{source}:speech:{start_ms}``, "
        "the same in every window it overlaps and in the summary's transcript.",
    )


class Speech(_Record):
    """What is said in a window, and the window's share of the transcript.

    The transcript is a list of utterances, each once, with a stable id (``utterance_id``)
    and its true start and end. Windows overlap, so each word is given to exactly one
    window, the one whose hop holds the word's start: window ``k`` owns
    ``[k * hop, (k + 1) * hop)`` (for hop 2 s and window 4 s, ``[start, start + 2)``); an
    utterance without word times counts as one word at its start. That partitions media
    time, the last window included (it holds every word that starts in its hop, and no
    later window exists that could), so joining ``new_text`` over the windows in order, with
    spaces, gives the whole transcript with no repeats.
    """

    text: str = Field(
        "", description="Words spoken inside the window [start, end); overlaps its neighbours."
    )
    segments: list[SpeechText] = Field(
        default_factory=list,
        description="Every utterance the window overlaps, whole: id, true start/end, text.",
    )
    new_text: str = Field(
        "",
        description="The transcript's words whose start lies in this window's hop "
        "[start, start + hop): concatenated over windows in order, the transcript.",
    )


class WindowRecord(_Published):
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
    objects: list[ObjectScore] = Field(default_factory=list)
    fusion: list[LabelScore] = Field(
        default_factory=list, description="Classes of the trained fusion head (fusion:<class>)."
    )
    description: str = ""
    events: list[str] = Field(default_factory=list)
    channels: list[str] = Field(
        default_factory=list,
        description="The modalities with evidence in it, by their record keys (visual, objects, "
        "audio, speech, subtitles, ocr).",
    )
    models: dict[str, str] = Field(default_factory=dict)
    published_at: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class EventRecord(_Published):
    schema_: Literal["mmlm.event/1"] = Field(EVENT_SCHEMA, alias="schema")
    id: str
    source: str
    type: EventType | str = Field(
        description="One of EventType; a reader also gets the types of newer producers."
    )
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
    zone: str | None = Field(
        None, description="The zone the object was in, for a rule restricted to zones."
    )
    snapshot: str | None = Field(
        None, description="Served at /events/{snapshot}/snapshot.jpg (the event's id)."
    )
    clip: str | None = Field(
        None,
        description="Served at /events/{clip}/clip.mp4 once clips.after_s has passed (live "
        "streams with clips.enabled).",
    )
    wall_start: str | None = None
    published_at: str | None = None

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("type")
    @classmethod
    def _known_type_unless_read(cls, value: str, info: ValidationInfo) -> str:
        if value not in EVENT_TYPES and not _reading(info):
            raise ValueError(f"unknown event type {value!r} ({', '.join(sorted(EVENT_TYPES))})")
        return value

    @property
    def known_type(self) -> bool:
        """False for a type of a newer producer (read, never built here)."""
        return self.type in EVENT_TYPES
