"""Watch queries (``events.queries``): a natural-language text scored against every window
(``rules/query_scoring.py``); key = the query's name."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from mmlm_stream.records.schema import EventType
from mmlm_stream.rules.base import (
    ConditionDetector,
    ConditionRule,
    Context,
    Observation,
    Synonyms,
    check_exit,
)


class WatchQuery(ConditionRule):
    """A natural-language watch query scored against every window; key = its name."""

    text: str = Field(..., min_length=1, description="What to watch for, in plain words.")
    threshold: float = Field(0.5, ge=0, le=1, description="Score that starts a match.")
    exit_threshold: float | None = Field(
        None, ge=0, le=1, description="Score it must stay at or above; null = same."
    )

    @model_validator(mode="after")
    def _exit_below_enter(self) -> WatchQuery:
        check_exit(self.threshold, self.exit_threshold, "")
        return self

    def needs_text(self) -> bool:
        return True

    def detector(self, synonyms: Synonyms | None) -> QueryDetector:
        return QueryDetector(self)


class QueryDetector(ConditionDetector):
    type: EventType = "query"

    def __init__(self, query: WatchQuery) -> None:
        self.query = query
        super().__init__(query)
        self.enter = query.threshold
        self.exit = query.threshold if query.exit_threshold is None else query.exit_threshold

    def observe(self, ctx: Context) -> dict[str, Observation]:
        match = ctx.queries.get(self.name)
        if match is None:
            return {}
        evidence: dict[str, Any] = {"query": {"text": self.query.text, "score": match.score}}
        if match.modality:
            found: dict[str, Any] = {"text": match.matched_text, "score": match.score}
            if match.time is not None:
                found["time"] = round(match.time, 3)
            evidence[match.modality] = found
        return {
            self.name: Observation(
                match.score,
                match.score >= self.enter,
                match.score >= self.exit,
                ctx.window.start,
                ctx.window.end,
                f"Watch query '{self.name}' matched.",
                evidence,
            )
        }
