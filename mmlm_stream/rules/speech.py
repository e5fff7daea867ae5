"""``type: speech``: a point event where speech begins after a pause a listener notices."""

from __future__ import annotations

from typing import Any, Literal

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


class SpeechRule(RuleConfig):
    """Speech begins after a pause a listener notices; one point event at the onset.

    A new utterance after 1 s without speech (voice activity) is a new turn: people take
    pauses under about 0.5 s between phrases as one flow and notice those over about 1 s
    (a turn, a hesitation). The start of a stream counts as silence.
    """

    type: Literal["speech"] = "speech"
    min_silence_s: float = Field(
        1.0, gt=0, description="Silence that must precede speech for a new 'speech' event."
    )

    def detector(self, synonyms: Synonyms | None) -> SpeechDetector:
        return SpeechDetector(self)


class SpeechDetector(PointDetector):
    rule: SpeechRule

    def events(self, window: FusedWindow, state: SourceState) -> list[EventRecord]:
        """A "speech" event at each onset that follows ``min_silence_s`` without speech.

        Spans are clipped to windows and windows may overlap, so a span that starts before the
        latest speech end already seen is the same speech continuing.
        """
        events = []
        for span in sorted(window.speech_spans, key=lambda s: s.start):
            last = state.memory.get(self.name)
            if last is None or span.start - last >= self.rule.min_silence_s - EPS:
                text = next((s.text.strip() for s in window.transcript if s.end > span.start), "")
                evidence: dict[str, Any] = {
                    "start": round(span.start, 3),
                    "end": round(span.end, 3),
                    **({"text": text} if text else {}),
                }
                events.append(
                    point_event(
                        window,
                        "speech",
                        "speech",
                        span.start,
                        1.0,
                        "Speech begins.",
                        {"speech": evidence},
                    )
                )
            state.memory[self.name] = span.end if last is None else max(last, span.end)
        return events
