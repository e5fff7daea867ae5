"""One model call for several callers: each gets back exactly what its own items produced."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmlm_stream.pipeline.encoding import call_role_per_request
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput, TranscriptSegment


class SentenceCounter:
    """A recogniser that hears two sentences in every utterance and records its calls."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def transcribe(self, speech: Sequence[SpeechInput]) -> list[TranscriptSegment]:
        self.calls.append([s.start for s in speech])
        out = []
        for s in speech:
            out += [
                TranscriptSegment(s.start, s.start + 1.0, "first.", "en", (), 1.0),
                TranscriptSegment(s.start + 1.0, s.start + 2.0, "second.", "en", (), 1.0),
            ]
        return out


class RowEmbedder:
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[len(t)] for t in texts], np.float32)


def utterance(start: float) -> SpeechInput:
    return SpeechInput(start, np.zeros(16_000, np.float32))


def test_every_segment_of_a_batch_reaches_its_caller_even_when_utterances_have_several():
    recogniser = SentenceCounter()
    requests = [[utterance(0.0), utterance(5.0), utterance(9.0)], [utterance(2.0)]]
    results = call_role_per_request(recogniser, Modality.SPEECH, requests)
    assert [len(r) for r in results] == [6, 2]
    assert [s.start for s in results[0]] == [0.0, 1.0, 5.0, 6.0, 9.0, 10.0]
    assert [s.start for s in results[1]] == [2.0, 3.0]


def test_a_recogniser_without_transcribe_many_is_called_once_per_source():
    recogniser = SentenceCounter()
    call_role_per_request(recogniser, Modality.SPEECH, [[utterance(0.0)], [], [utterance(0.5)]])
    assert recogniser.calls == [[0.0], [0.5]]


def test_one_result_per_item_roles_are_merged_into_one_call_and_split_back():
    results = call_role_per_request(RowEmbedder(), Modality.TEXT, [["a", "bb"], ["ccc"]])
    assert [r[:, 0].tolist() for r in results] == [[1.0, 2.0], [3.0]]


class ManyCounter(SentenceCounter):
    def transcribe_many(self, requests):
        self.calls.append([s.start for items in requests for s in items])
        return [
            [TranscriptSegment(s.start, s.end, "x.", "en", (), 1.0) for s in r] for r in requests
        ]


def test_a_recogniser_with_transcribe_many_answers_every_caller_in_one_call():
    recogniser = ManyCounter()
    results = call_role_per_request(
        recogniser, Modality.SPEECH, [[utterance(0.0)], [utterance(0.5)]]
    )
    assert recogniser.calls == [[0.0, 0.5]]
    assert [[s.start for s in r] for r in results] == [[0.0], [0.5]]
