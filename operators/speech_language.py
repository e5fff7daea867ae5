"""Which language a live source's next utterances are sent with.

Whisper detects the language of every call from its first window, and a window can only be
shared by speech of one language; a source that says which language it speaks lets the
recogniser skip detection and pack its utterances with other sources' speech of that
language (one 30 s window instead of one per utterance: on a machine watching many streams,
most of Whisper's cost). The rule: a live source's utterances carry the language most of its
last transcript was in, except every ``redetect_every``-th batch, which goes without one and
is detected afresh, so a speaker who changes language is heard within that many batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mmlm_stream.records.results import SpeechInput, TranscriptSegment

REDETECT_EVERY = 20
"""A batch sent without the hint is decoded alone (1.0 s of CPU for Whisper base's 30 s
window): at every 5th, ten streams spent a fifth of a core re-detecting a language that
seldom changes on one camera."""


@dataclass
class LanguageHint:
    redetect_every: int = REDETECT_EVERY
    language: str | None = None
    _sent: int = 0

    def apply(self, batch: Sequence[SpeechInput]) -> list[SpeechInput]:
        """``batch`` as it should be sent: with the hint, or without it to detect."""
        self._sent += 1
        if self.language is None or self._sent % self.redetect_every == 0:
            return list(batch)
        return [replace(item, language=self.language) for item in batch]

    def heard(self, segments: Sequence[TranscriptSegment]) -> None:
        """Learn from a transcript: the language most of its words were in."""
        weights: Counter[str] = Counter()
        for segment in segments:
            if segment.language:
                weights[segment.language] += max(1, len(segment.words))
        if weights:
            self.language = weights.most_common(1)[0][0]
