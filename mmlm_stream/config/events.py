"""Configuration of the event engine (``events:`` in the config file; see operators/detect.py).

Two lists: ``rules`` (what to detect, each with a ``type`` and a unique ``name``) and
``queries`` (natural-language watch queries). When ``rules`` is empty the built-in
``default_rules()`` run; ``include_defaults: true`` runs them next to the user's rules, and a
user rule with the name of a built-in one replaces it (``enabled: false`` switches it off).

Times are media seconds. A condition (label, keyword, sound, query) starts when its score
reaches ``threshold``, continues while it stays at or above ``exit_threshold`` (hysteresis),
is reported once it has held ``min_duration_s``, and after it ends the same rule and key stay
quiet for ``cooldown_s``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"

LabelModality = Literal["visual", "audio", "objects", "fusion"]
TextField = Literal["speech", "subtitles", "ocr"]

ALARM_TAGS: tuple[str, ...] = (
    "Alarm",
    "Alarm clock",
    "Siren",
    "Civil defense siren",
    "Buzzer",
    "Smoke detector, smoke alarm",
    "Fire alarm",
    "Beep, bleep",
    "Reversing beeps",
    "Car alarm",
    "Police car (siren)",
    "Ambulance (siren)",
    "Fire engine, fire truck (siren)",
    "Emergency vehicle",
    "Foghorn",
)
"""AudioSet (YAMNet) names of alarm-like sounds; any comma-separated synonym matches."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
    return pattern


class _Rule(_Section):
    name: str = Field(
        ..., pattern=RULE_NAME, description="Unique rule name ([A-Za-z0-9_.-], 1-64 chars)."
    )
    enabled: bool = Field(True, description="False switches the rule off (e.g. a built-in one).")


class ConditionRule(_Rule):
    """A rule whose condition lasts: one event per occurrence, with a start and an end."""

    min_duration_s: float = Field(
        0.0, ge=0, description="The condition must hold this long before the event is emitted."
    )
    cooldown_s: float = Field(
        0.0, ge=0, description="After an event ends, the same rule and key stay quiet this long."
    )


def _check_exit(threshold: float, exit_threshold: float | None, what: str) -> None:
    if exit_threshold is not None and exit_threshold > threshold:
        raise ValueError(f"{what}exit_threshold must not exceed {what}threshold")


class LabelRule(ConditionRule):
    """A label of a modality crosses its threshold; key = the matched term (regex: the name)."""

    type: Literal["label"] = "label"
    modality: list[LabelModality] = Field(
        default_factory=lambda: ["visual", "objects"],
        description="Where to look: visual (frame labels), audio (sound tags), objects "
        "(detections), fusion (fusion-head classes). One name or a list.",
    )
    label: str | None = Field(
        None, description="A term matched as whole words against every synonym of a label."
    )
    labels: list[str] = Field(
        default_factory=list, description="Several terms; each one is its own condition (key)."
    )
    regex: str | None = Field(
        None, description="Case-insensitive regex searched in every synonym; key = rule name."
    )
    aggregate: Literal["max", "sum"] = Field(
        "max",
        description="Score of a term: best matching label, or the sum of all matching labels "
        "(capped at 1) for classifiers that spread one object over a synonym family.",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Score that starts the condition.")
    exit_threshold: float | None = Field(
        None, ge=0, le=1, description="Score it must stay at or above to continue; null = same."
    )
    description: str | None = Field(
        None, description="Event sentence template with {label} and {score}; null = built-in."
    )

    @field_validator("modality", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return _check_regex(value)

    @model_validator(mode="after")
    def _needs_something(self) -> LabelRule:
        if self.label is None and not self.labels and self.regex is None:
            raise ValueError("a label rule needs label, labels or regex")
        if not self.modality:
            raise ValueError("modality must name at least one modality")
        _check_exit(self.threshold, self.exit_threshold, "")
        if self.description is not None:
            try:
                self.description.format(label="cat", score=0.5)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"description may use only {{label}} and {{score}}: {error!r}"
                ) from None
        return self

    @property
    def terms(self) -> list[str]:
        return list(dict.fromkeys([*([self.label] if self.label else []), *self.labels]))


class KeywordRule(ConditionRule):
    """Transcript, subtitles or on-screen text match a regex or words; key = rule name."""

    type: Literal["keyword"] = "keyword"
    regex: str | None = Field(None, description="Case-insensitive regular expression.")
    words: list[str] = Field(
        default_factory=list, description="Words or phrases matched whole (case-insensitive)."
    )
    search: list[TextField] = Field(
        default_factory=lambda: ["speech", "subtitles", "ocr"],
        description="Which text to search: speech (the transcript), subtitles, ocr.",
    )

    @field_validator("regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return _check_regex(value)

    @model_validator(mode="after")
    def _needs_pattern(self) -> KeywordRule:
        if self.regex is None and not self.words:
            raise ValueError("a keyword rule needs regex or words")
        return self

    def pattern(self) -> re.Pattern[str]:
        parts = [self.regex] if self.regex else []
        parts += [r"\b" + re.escape(word) + r"\b" for word in self.words]
        return re.compile("|".join(f"(?:{part})" for part in parts), re.IGNORECASE)


class SoundRule(ConditionRule):
    """Named sounds (key = the sound: ``alarm``, ``ring``, ``beep``...), tags (key = ``kind``)
    and loud audio (key = "loud").

    With ``alarm``, the window's named sounds (operators/sounds.py) whose key is in ``sounds``
    raise events under that key: ``alarm`` only for alarm-like evidence that lasts about 2 s
    (YAMNet patches or a beeping high tone), a phone ring is ``ring``, one beep is ``beep``.
    Windows without patch-level evidence fall back to the alarm-like tags (``ALARM_TAGS``).
    A loud event's confidence is its level mapped linearly from -60 dBFS (0) to 0 dBFS (1).
    """

    type: Literal["sound"] = "sound"
    alarm: bool = Field(
        True, description="Raise events for the built-in named sounds listed in sounds."
    )
    sounds: list[str] = Field(
        default_factory=lambda: ["alarm", "siren", "ring", "doorbell", "beep", "knock"],
        description="Named sound keys that raise events (alarm, siren, ring, doorbell, beep, "
        "knock, bell, bang, shatter, ...).",
    )
    tags: list[str] = Field(
        default_factory=list, description="More AudioSet tag names to match (any synonym)."
    )
    kind: str = Field("alarm", pattern=RULE_NAME, description="Event key of the tag condition.")
    tag_threshold: float = Field(0.3, ge=0, le=1, description="Tag score that starts it.")
    tag_exit_threshold: float | None = Field(
        None, ge=0, le=1, description="Tag score it must stay at or above; null = same."
    )
    level: Literal["rms", "peak", "short_term"] = Field(
        "rms",
        description="Loudness measure of the window: rms (whole window), peak, or short_term "
        "(the loudest 400 ms, so a 1 s burst is not averaged away).",
    )
    above_dbfs: float | None = Field(
        None, le=0, description="Loud when the level is at or above this; null = off."
    )
    jump_db: float | None = Field(
        None,
        gt=0,
        description="Loud when the level rises this far above the median of recent windows "
        "(and is above floor_dbfs); null = off.",
    )
    floor_dbfs: float = Field(
        -20.0, le=0, description="Absolute level a jump must also reach (speech after silence)."
    )
    baseline_windows: int = Field(
        15, ge=3, description="Recent windows whose median level is the jump baseline."
    )
    hysteresis_db: float = Field(
        3.0, ge=0, description="A loud condition continues until the level drops this far below."
    )

    @model_validator(mode="after")
    def _needs_something(self) -> SoundRule:
        if not (self.alarm or self.tags or self.above_dbfs is not None or self.jump_db):
            raise ValueError("a sound rule needs alarm, tags, above_dbfs or jump_db")
        _check_exit(self.tag_threshold, self.tag_exit_threshold, "tag_")
        return self


class SceneChangeRule(_Rule):
    """Consecutive frames differ (cosine distance, computed by fusion); one point event each."""

    type: Literal["scene_change"] = "scene_change"
    threshold: float = Field(
        0.35, ge=0, le=2, description="Cosine distance between consecutive frames that counts."
    )
    cooldown_s: float = Field(0.0, ge=0, description="Least media time between two changes.")


class SpeechRule(_Rule):
    """Speech begins after a pause a listener notices; one point event at the onset.

    A new utterance after 1 s without speech (voice activity) is a new turn: people take
    pauses under about 0.5 s between phrases as one flow and notice those over about 1 s
    (a turn, a hesitation). The start of a stream counts as silence.
    """

    type: Literal["speech"] = "speech"
    min_silence_s: float = Field(
        1.0, gt=0, description="Silence that must precede speech for a new 'speech' event."
    )


AnyRule = LabelRule | KeywordRule | SoundRule | SceneChangeRule | SpeechRule
Rule = Annotated[AnyRule, Field(discriminator="type")]


class WatchQuery(ConditionRule):
    """A natural-language watch query scored against every window; key = its name."""

    text: str = Field(..., min_length=1, description="What to watch for, in plain words.")
    threshold: float = Field(0.5, ge=0, le=1, description="Score that starts a match.")
    exit_threshold: float | None = Field(
        None, ge=0, le=1, description="Score it must stay at or above; null = same."
    )

    @model_validator(mode="after")
    def _exit_below_enter(self) -> WatchQuery:
        _check_exit(self.threshold, self.exit_threshold, "")
        return self


class EventsConfig(_Section):
    """The event engine: which rules and watch queries turn windows into events."""

    enabled: bool = Field(True, description="Detect events at all.")
    include_defaults: bool | None = Field(
        None, description="Run the built-in rules too; null = only when rules is empty."
    )
    rules: list[Rule] = Field(default_factory=list, description="Detection rules (by type).")
    queries: list[WatchQuery] = Field(
        default_factory=list, description="Natural-language watch queries."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EventsConfig:
        names = [rule.name for rule in self.rules] + [query.name for query in self.queries]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rule and query names must be unique: {', '.join(twice)}")
        return self

    def active_rules(self) -> list[AnyRule]:
        """The rules that run: the user's, with the built-in ones as configured, enabled only."""
        rules = list(self.rules)
        if self.include_defaults or (self.include_defaults is None and not self.rules):
            own = {rule.name for rule in rules}
            rules = [rule for rule in default_rules() if rule.name not in own] + rules
        return [rule for rule in rules if rule.enabled]


def default_rules() -> list[AnyRule]:
    """The built-in rules, chosen for the default model set on real content.

    - speech: a "speech" event on each utterance that follows 1 s without speech.
    - sound: named sounds (alarm, siren, ring, doorbell, beep, knock) at 0.3 (continuing down
      to 0.2), and loud audio when the loudest 400 ms reach -10 dBFS RMS (normal speech sits
      around -30 to -18 dBFS, its loudest 400 ms about 4 dB higher). No jump rule: after
      digital silence every speech onset is a jump, and a floor high enough to exclude speech
      leaves little that -10 dBFS does not already catch.
    - scene_change: cosine distance of 0.35 between consecutive frame embeddings.
    - in_view: person, car, dog, cat among detections or frame labels at 0.5 (continuing down
      to 0.3), summed over synonym families (ImageNet spreads a cat over "tabby", "tiger cat",
      "Egyptian cat"), held 2 s, then quiet for 10 s after it ends.
    """
    return [
        SpeechRule(name="speech", min_silence_s=1.0),
        SoundRule(
            name="sound",
            alarm=True,
            tag_threshold=0.3,
            tag_exit_threshold=0.2,
            level="short_term",
            above_dbfs=-10.0,
            cooldown_s=10.0,
        ),
        SceneChangeRule(name="scene_change", threshold=0.35),
        LabelRule(
            name="in_view",
            modality=["objects", "visual"],
            labels=["person", "car", "dog", "cat"],
            aggregate="sum",
            threshold=0.5,
            exit_threshold=0.3,
            min_duration_s=2.0,
            cooldown_s=10.0,
        ),
    ]


EXAMPLE_YAML = r"""events:
  enabled: true
  include_defaults: true        # keep the built-in speech/sound/scene/in_view rules
  rules:
    - type: label
      name: cat
      modality: visual
      label: cat                # whole word in any synonym: "tabby cat", "Egyptian cat"
      aggregate: sum
      threshold: 0.5
      exit_threshold: 0.3
      min_duration_s: 4
      cooldown_s: 30
    - type: label
      name: vehicles
      modality: [objects, visual]
      regex: '\b(truck|van|bus)\b'   # single quotes keep the backslashes
      threshold: 0.6
      description: "A vehicle ({label}) is in view."
    - type: keyword
      name: delivery_words
      words: [package, parcel, delivery]
      regex: "sign(ed)? for"
      search: [speech, subtitles, ocr]
      cooldown_s: 10
    - type: sound
      name: sound                # replaces the built-in sound rule
      alarm: true                # built-in named sounds: alarm, siren, ring, doorbell, beep, knock
      tag_threshold: 0.3
      tag_exit_threshold: 0.2
      level: peak                # loud audio, key "loud" (rms, peak or short_term: loudest 400 ms)
      above_dbfs: -3
      jump_db: 25                # or 25 dB above the recent median ...
      floor_dbfs: -20            # ... and at least -20 dBFS
      cooldown_s: 10
    - type: sound
      name: glass
      alarm: false
      tags: ["Glass", "Shatter"]
      kind: glass                # event key
      tag_threshold: 0.4
    - type: scene_change
      name: scene_change
      threshold: 0.4
      cooldown_s: 2
    - type: speech
      name: speech
      min_silence_s: 3
  queries:
    - name: delivery
      text: a courier delivering a package
      threshold: 0.55
      exit_threshold: 0.45
      min_duration_s: 2
      cooldown_s: 60
"""
"""A complete ``events:`` section (docs/events.md example; tests load it)."""
