"""``type: sound``: named sounds (key = the sound: ``alarm``, ``ring``, ``beep``...), tags
(key = the rule's ``kind``) and loud audio (key = ``loud``)."""

from __future__ import annotations

import re
import statistics
from collections import deque
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.label_groups import SOUND_BY_KEY
from mmlm_stream.records.results import Label
from mmlm_stream.records.schema import EventType
from mmlm_stream.rules.base import (
    RULE_NAME,
    ConditionDetector,
    ConditionRule,
    Context,
    Observation,
    SourceState,
    Synonyms,
    check_exit,
    labels_json,
)

_SILENCE = "silence"

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
        check_exit(self.tag_threshold, self.tag_exit_threshold, "tag_")
        return self

    def detector(self, synonyms: Synonyms | None) -> SoundDetector:
        return SoundDetector(self)


def _levels(window: FusedWindow) -> dict[str, float]:
    levels = {
        "rms_dbfs": window.rms_dbfs,
        "peak_dbfs": window.peak_dbfs,
        "short_term_dbfs": window.short_term_dbfs,
    }
    return {name: round(value, 2) for name, value in levels.items() if value is not None}


def _level(window: FusedWindow, measure: str) -> float | None:
    if measure == "short_term":
        # Encoders that do not measure it: the window RMS (a lower bound of the loudest 400 ms).
        return window.short_term_dbfs if window.short_term_dbfs is not None else window.rms_dbfs
    return window.rms_dbfs if measure == "rms" else window.peak_dbfs


def _tag_names(name: str) -> set[str]:
    return {part.strip().lower() for part in re.split(r"[,/]", name) if part.strip()}


class SoundDetector(ConditionDetector):
    type: EventType = "sound"

    def __init__(self, rule: SoundRule) -> None:
        self.rule = rule
        super().__init__(rule)
        tags = [*(ALARM_TAGS if rule.alarm else ()), *rule.tags]
        self.tag_names = {name for tag in tags for name in _tag_names(tag)} - {_SILENCE}
        self.custom_names = {name for tag in rule.tags for name in _tag_names(tag)} - {_SILENCE}
        self.enter = rule.tag_threshold
        exit_threshold = rule.tag_exit_threshold
        self.exit = rule.tag_threshold if exit_threshold is None else exit_threshold
        self.keys = set(rule.sounds)

    def _named(self, window: FusedWindow, state: SourceState) -> dict[str, Observation]:
        """One observation per named sound of the window whose key the rule raises, from the
        sound's calibrated score (``Sound.min_score``) or the rule's threshold if higher.

        The last beeps of an alarm that is going on or just ended (a window holding only its
        tail, or the alarm's cooldown) belong to the alarm rather than start a ``beep``."""
        seen = {}
        alarm_recent = (self.name, "alarm") in state.conditions
        for heard in window.sounds or ():
            key = "alarm" if heard.key == "beep" and alarm_recent else heard.key
            if key not in self.keys or key in seen:
                continue
            top = heard.evidence[0] if heard.evidence else Label(heard.key, heard.score)
            shown = top.label.split(",")[0].strip()
            sound = SOUND_BY_KEY.get(key)
            clause = sound.clause if sound is not None else f"a {key} sound is heard"
            enter = max(self.enter, sound.min_score if sound is not None else 0.0)
            seen[key] = Observation(
                heard.score,
                heard.score >= enter and key == heard.key,
                heard.score >= self.exit,
                window.start,
                window.end,
                f"{clause[:1].upper()}{clause[1:]} ({shown} {top.score:.2f}).",
                {
                    "audio": {
                        "labels": labels_json(heard.evidence),
                        "start": round(heard.start, 3),
                        "end": round(heard.end, 3),
                        "lasting": heard.lasting,
                    }
                },
            )
        return seen

    def observe(self, ctx: Context) -> dict[str, Observation]:
        window, rule = ctx.window, self.rule
        seen: dict[str, Observation] = {}
        named = rule.alarm and window.sounds is not None
        if named:
            seen.update(self._named(window, ctx.state))
        tag_names = self.custom_names if named else self.tag_names
        tags = [lb for lb in window.audio if _tag_names(lb.label) & tag_names]
        if tags and rule.kind not in seen:
            top = max(tags, key=lambda lb: lb.score)
            shown = top.label.split(",")[0].strip()
            text = (
                f"An alarm sounds ({shown} {top.score:.2f})."
                if rule.kind == "alarm"
                else f"A {rule.kind} sound is heard ({shown} {top.score:.2f})."
            )
            seen[rule.kind] = Observation(
                top.score,
                top.score >= self.enter,
                top.score >= self.exit,
                window.start,
                window.end,
                text,
                {"audio": {"labels": labels_json(sorted(tags, key=lambda lb: -lb.score))}},
            )
        level = _level(window, rule.level)
        if level is not None and (rule.above_dbfs is not None or rule.jump_db is not None):
            loud = self._loud(ctx.state, level)
            if loud is not None:
                seen["loud"] = Observation(
                    float(np.clip(1.0 + level / 60.0, 0.0, 1.0)),
                    loud,
                    True,
                    window.start,
                    window.end,
                    f"A loud sound is heard ({level:.0f} dBFS {rule.level.replace('_', '-')}).",
                    {"audio": _levels(window)},
                )
        return seen

    def _loud(self, state: SourceState, level: float) -> bool | None:
        """True: loud enough to start; False: only to continue; None: not loud."""
        rule = self.rule
        history = state.memory.setdefault(self.name, deque(maxlen=rule.baseline_windows))
        baseline = statistics.median(history) if len(history) >= 3 else None
        history.append(level)
        starts = holds = False
        if rule.above_dbfs is not None:
            starts |= level >= rule.above_dbfs
            holds |= level >= rule.above_dbfs - rule.hysteresis_db
        if rule.jump_db is not None and baseline is not None:
            starts |= level >= max(baseline + rule.jump_db, rule.floor_dbfs)
            holds |= level >= max(baseline + rule.jump_db, rule.floor_dbfs) - rule.hysteresis_db
        return starts if holds else None
