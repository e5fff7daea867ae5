"""An event rule type in one file: ``type: level``, a ``sound`` event while the window's
RMS level is at or above ``above_dbfs`` (key: the rule's ``key``).

The recipe of docs/architecture.md: a ``RuleConfig`` subclass with a ``type`` literal, its
fields, and ``detector()`` returning a ``ConditionDetector`` (the engine adds hysteresis,
minimum duration and cooldown) or a ``PointDetector``; ``rules.registry.register(LevelRule)``
makes ``events.rules`` accept ``{type: level, ...}``. Its events use a type of the record
schema (``sound``): a new event type is a change of the contract.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmlm_stream.records.schema import EventType
from mmlm_stream.rules.base import (
    ConditionDetector,
    ConditionRule,
    Context,
    Observation,
    Synonyms,
)


class LevelRule(ConditionRule):
    """The window's RMS level reaches ``above_dbfs``."""

    type: Literal["level"] = "level"
    above_dbfs: float = Field(-40.0, le=0, description="Level that starts the condition.")
    key: str = Field("level", description="Event key.")

    def detector(self, synonyms: Synonyms | None) -> LevelDetector:
        return LevelDetector(self)


class LevelDetector(ConditionDetector):
    type: EventType = "sound"

    def __init__(self, rule: LevelRule) -> None:
        super().__init__(rule)
        self.rule = rule

    def observe(self, ctx: Context) -> dict[str, Observation]:
        level = ctx.window.rms_dbfs
        if level is None or level < self.rule.above_dbfs:
            return {}
        window = ctx.window
        return {
            self.rule.key: Observation(
                1.0,
                True,
                True,
                window.start,
                window.end,
                f"The level is {level:.0f} dBFS.",
                {"audio": {"rms_dbfs": round(level, 2)}},
            )
        }
