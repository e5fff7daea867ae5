"""``type: keyword``: the transcript, subtitles or on-screen text match a regex or words;
key = the rule's name. The event starts at the matching words, cue or OCR frame."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import OcrResult, TranscriptSegment
from mmlm_stream.records.schema import EventType
from mmlm_stream.rules.base import (
    ConditionDetector,
    ConditionRule,
    Context,
    Observation,
    Synonyms,
    TextField,
    check_regex,
)


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
        return check_regex(value)

    @model_validator(mode="after")
    def _needs_pattern(self) -> KeywordRule:
        if self.regex is None and not self.words:
            raise ValueError("a keyword rule needs regex or words")
        return self

    def pattern(self) -> re.Pattern[str]:
        parts = [self.regex] if self.regex else []
        parts += [r"\b" + re.escape(word) + r"\b" for word in self.words]
        return re.compile("|".join(f"(?:{part})" for part in parts), re.IGNORECASE)

    def needs_text(self) -> bool:
        return "speech" in self.search

    def detector(self, synonyms: Synonyms | None) -> KeywordDetector:
        return KeywordDetector(self)


@dataclass(frozen=True)
class _Hit:
    where: str
    start: float
    end: float
    text: str
    match: str


_SAYS = {
    "speech": 'Someone says "{}".',
    "subtitles": 'The subtitles say "{}".',
    "ocr": 'On-screen text reads "{}".',
}


class KeywordDetector(ConditionDetector):
    type: EventType = "keyword"

    def __init__(self, rule: KeywordRule) -> None:
        self.rule = rule
        super().__init__(rule)
        self.pattern = rule.pattern()

    def observe(self, ctx: Context) -> dict[str, Observation]:
        hits = self._hits(ctx.window)
        if not hits:
            return {}
        first = min(hits, key=lambda h: h.start)
        evidence: dict[str, Any] = {}
        for hit in sorted(hits, key=lambda h: h.start):
            evidence.setdefault(
                hit.where,
                {
                    "text": hit.text,
                    "match": hit.match,
                    "start": round(hit.start, 3),
                    "end": round(hit.end, 3),
                },
            )
        return {
            self.name: Observation(
                1.0,
                True,
                True,
                first.start,
                max(h.end for h in hits),
                _SAYS[first.where].format(first.match),
                evidence,
            )
        }

    def _hits(self, window: FusedWindow) -> list[_Hit]:
        hits: list[_Hit] = []
        search = set(self.rule.search)
        if "speech" in search:
            for segment in window.transcript:
                hits += self._in_segment(segment)
        if "subtitles" in search:
            for cue in window.subtitles:
                text = " ".join(cue.text.split())
                hits += [
                    _Hit("subtitles", cue.start, cue.end, text, m.group(0))
                    for m in self.pattern.finditer(text)
                ]
        if "ocr" in search:
            timed = [
                (result.time, item.text)
                for result in window.contents.of(Modality.OCR)
                if isinstance(result, OcrResult)
                for item in result.texts
            ]
            if not timed:
                timed = [(window.start, text) for text in window.ocr]
            for at, text in timed:
                hits += [_Hit("ocr", at, at, text, m.group(0)) for m in self.pattern.finditer(text)]
        return hits

    def _in_segment(self, segment: TranscriptSegment) -> list[_Hit]:
        """Matches in one segment, timed by its words when they spell the segment's text."""
        text = segment.text.strip()
        spans: list[tuple[int, int, float, float]] = []
        offset = 0
        for word in segment.words:
            token = word.text.strip()
            spans.append((offset, offset + len(token), word.start, word.end))
            offset += len(token) + 1
        timed = bool(spans) and " ".join(w.text.strip() for w in segment.words) == text
        hits = []
        for m in self.pattern.finditer(text):
            start, end = segment.start, segment.end
            if timed:
                inside = [s for s in spans if s[1] > m.start() and s[0] < m.end()]
                if inside:
                    start, end = inside[0][2], inside[-1][3]
            hits.append(_Hit("speech", start, end, text, m.group(0)))
        return hits
