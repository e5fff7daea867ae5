"""A live source's utterances carry the language it was last heard in, and are re-detected
now and then."""

from __future__ import annotations

import numpy as np

from mmlm_stream.operators.speech_language import LanguageHint
from mmlm_stream.records.results import SpeechInput, TranscriptSegment, Word


def utterances(n: int = 2) -> list[SpeechInput]:
    return [SpeechInput(float(i), np.zeros(1600, np.float32)) for i in range(n)]


def said(language: str, words: int) -> TranscriptSegment:
    return TranscriptSegment(
        0.0, 1.0, "x", language, tuple(Word(0.0, 0.1, "x", 1.0) for _ in range(words)), 1.0
    )


def test_the_first_batch_goes_without_a_language_and_later_ones_with_the_one_heard():
    hint = LanguageHint(redetect_every=5)
    assert all(s.language is None for s in hint.apply(utterances()))
    hint.heard([said("de", 3)])
    assert [s.language for s in hint.apply(utterances())] == ["de", "de"]


def test_every_nth_batch_is_detected_afresh_and_a_new_language_takes_over():
    hint = LanguageHint(redetect_every=3)
    hint.heard([said("en", 2)])
    sent = [hint.apply(utterances(1))[0].language for _ in range(6)]
    assert sent == ["en", "en", None, "en", "en", None]
    hint.heard([said("fr", 4), said("en", 1)])
    assert hint.apply(utterances(1))[0].language == "fr"


def test_a_transcript_without_words_or_language_changes_nothing():
    hint = LanguageHint()
    hint.heard([said("en", 1)])
    hint.heard([])
    hint.heard([TranscriptSegment(0.0, 1.0, "x", None, (), 1.0)])
    assert hint.language == "en"
