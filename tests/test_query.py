"""Watch-query scoring with a deterministic bag-of-words text encoder (pure logic only)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from mmlm_stream.config.events import EventsConfig
from mmlm_stream.operators.detect import EventEngine
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import FusedWindow, WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoding, Label, OcrResult, OcrText, TranscriptSegment
from mmlm_stream.rules.query_scoring import QueryMatch, TextQueryScorer, label_names, text_match
from mmlm_stream.rules.watch_query import WatchQuery

DIM = 256


class BagOfWords:
    """Hashed word counts, L2-normalised: cosine = shared-word overlap. Records each call."""

    model_id = "test/bag-of-words"
    embedding_dim = DIM

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def warmup(self) -> None:
        pass

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), DIM), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % DIM] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


class SharedSpace:
    """A CLIP-like frame encoder: query score = first embedding coordinate."""

    model_id = "test/clip"

    def score_embeddings(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return np.repeat(embeddings[:, :1], len(texts), axis=1)


def win(start: float = 0.0, end: float = 4.0, items=None, **fields) -> FusedWindow:
    items = items or {}
    return FusedWindow(
        contents=WindowContents("cam", start, end, items, frozenset(items)), **fields
    )


def scorer(**kwargs) -> tuple[TextQueryScorer, BagOfWords]:
    encoder = BagOfWords()
    kwargs.setdefault("synonyms", None)
    return TextQueryScorer(encoder, **kwargs), encoder


def test_match_is_linear_between_floor_and_ceiling():
    assert text_match(np.array([0.2, 0.35, 0.525, 0.7, 0.9])) == pytest.approx([0, 0, 0.5, 1, 1])


def test_label_evidence_is_the_match_times_the_label_score():
    score, _ = scorer()
    (match,) = score.score_with_evidence(win(objects=(Label("dog", 0.8),)), ["dog"])
    assert match == QueryMatch(0.8, "objects", "dog")


def test_frame_labels_sum_over_a_synonym_family_through_their_synonyms():
    names = {"tabby": ("tabby cat",), "tiger cat": ("tabby cat",)}
    score, _ = scorer(synonyms=lambda label: names.get(label, ()))
    window = win(visual=(Label("tabby", 0.3), Label("tiger cat", 0.25)))
    (match,) = score.score_with_evidence(window, ["tabby cat"])
    assert match.score == pytest.approx(0.55)
    assert (match.modality, match.matched_text) == ("visual", "tabby")


def test_other_label_kinds_take_the_best_label_not_the_sum():
    score, _ = scorer()
    window = win(objects=(Label("person", 0.5), Label("person walking", 0.4)))
    (match,) = score.score_with_evidence(window, ["person"])
    assert match.score == pytest.approx(0.5)


def test_silence_tags_never_match():
    score, _ = scorer()
    assert score(win(audio=(Label("Silence", 0.98),)), ["silence"]) == pytest.approx([0.0])


def test_transcript_subtitles_and_ocr_match_without_label_weight():
    score, _ = scorer()
    ocr = OcrResult(3.0, (OcrText("FRAGILE parcel", ((0, 0), (1, 1)), 0.9),))
    window = win(
        items={Modality.OCR: (ocr,)},
        transcript=(TranscriptSegment(1.0, 2.0, "the courier is here"),),
        subtitles=(SubtitleCue("cam", 2.0, 3.0, "Ring\nthe bell"),),
        ocr=("FRAGILE parcel",),
    )
    spoken, shown, read, nothing = score.score_with_evidence(
        window, ["courier here", "ring bell", "fragile parcel", "volcano"]
    )
    assert (spoken.modality, spoken.matched_text, spoken.time) == (
        "speech",
        "the courier is here",
        1.0,
    )
    assert spoken.score == pytest.approx(1.0)
    assert (shown.modality, shown.matched_text) == ("subtitles", "Ring the bell")
    assert (read.modality, read.score, read.time) == ("ocr", 1.0, 3.0)
    assert nothing == QueryMatch(0.0)


def test_call_returns_one_score_per_query_in_range():
    score, _ = scorer()
    scores = score(win(objects=(Label("cat", 0.9),)), ["cat", "truck", "a cat"])
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))
    assert score(win(), []).shape == (0,)


def test_queries_and_label_names_are_embedded_once():
    score, encoder = scorer()
    window = win(visual=(Label("cat", 0.9),), transcript=(TranscriptSegment(0, 1, "hi cat"),))
    score(window, ["cat"])
    score(window, ["cat"])
    score(win(4, 8, visual=(Label("cat", 0.5),)), ["cat"])
    embedded = [text for call in encoder.calls for text in call]
    assert sorted(embedded) == ["cat", "hi cat"]


def test_cache_stays_bounded():
    score, encoder = scorer(cache_size=4)
    for i in range(10):
        score(win(transcript=(TranscriptSegment(0, 1, f"line {i}"),)), ["line"])
    encoder.calls.clear()
    score(win(transcript=(TranscriptSegment(0, 1, "line 0"),)), ["line"])
    assert encoder.calls == [["line 0"]]


def test_shared_frame_space_scores_each_frame_embedding():
    score, _ = scorer(frame_encoder=SharedSpace())
    frames = (
        FrameEncoding(1.0, np.array([0.2, 0.9], np.float32)),
        FrameEncoding(2.0, np.array([0.7, 0.1], np.float32)),
    )
    (match,) = score.score_with_evidence(win(items={Modality.VISUAL: frames}), ["anything"])
    assert (match.modality, match.time, match.score) == ("visual", 2.0, pytest.approx(0.7))
    mean_only = win(frame_mean=np.array([0.6, 0.0], np.float32))
    assert score(mean_only, ["x"]) == pytest.approx([0.6])


def test_a_frame_encoder_without_a_shared_space_is_not_used():
    class LabelsOnly:
        model_id = "efficientnet"

    score, _ = scorer(frame_encoder=LabelsOnly())
    assert score(win(frame_mean=np.ones(2, np.float32)), ["x"]) == pytest.approx([0.0])


def test_label_names_split_synonym_lists():
    assert label_names("Beep, bleep") == ("Beep, bleep", "Beep", "bleep")
    assert label_names("tabby", lambda _: ("tabby", "tabby cat")) == ("tabby", "tabby cat")


def test_engine_reports_the_matching_evidence_of_a_watch_query():
    query = WatchQuery(name="courier", text="courier at the door", threshold=0.5)
    score, _ = scorer()
    engine = EventEngine(EventsConfig(rules=[], queries=[query], include_defaults=False), score)
    segment = TranscriptSegment(1.0, 2.0, "a courier is at the door")
    (event,) = engine.process(win(transcript=(segment,)))
    assert (event.type, event.key, event.ongoing) == ("query", "courier", True)
    assert event.evidence["speech"] == {
        "text": "a courier is at the door",
        "score": 1.0,
        "time": 1.0,
    }
    assert event.evidence["query"]["text"] == "courier at the door"
