"""Fusion of one window's evidence: pooling rules per modality and the fused vector."""

from __future__ import annotations

import numpy as np
import pytest

from mmlm_stream.operators.fuse import Fuser, FuseSettings
from mmlm_stream.operators.window import Windower
from mmlm_stream.records.channels import SubtitleCue
from mmlm_stream.records.evidence import WindowContents
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import (
    AudioEncoding,
    FrameEncoding,
    Label,
    OcrResult,
    OcrText,
    TimeSpan,
    TranscriptSegment,
    Word,
)


def vec(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def window(start: float, end: float, **items) -> WindowContents:
    mapped = {Modality(k): tuple(v) for k, v in items.items()}
    return WindowContents("src", start, end, mapped, frozenset(mapped))


def test_visual_labels_are_max_pooled_and_embeddings_normalised():
    frames = [
        FrameEncoding(0.0, vec(1, 0), (Label("tabby", 0.4), Label("tiger cat", 0.3))),
        FrameEncoding(1.0, vec(1, 0.1), (Label("tabby", 0.6),)),
    ]
    fused = Fuser(FuseSettings(smoothing=0.0)).fuse(window(0, 4, visual=frames))
    assert fused.visual[0] == Label("tabby", 0.6)
    assert fused.visual[1] == Label("tiger cat", 0.3)
    assert np.linalg.norm(fused.frame_mean) == pytest.approx(1.0)
    assert np.linalg.norm(fused.fused) == pytest.approx(1.0)


def test_label_scores_are_smoothed_with_the_previous_window():
    fuser = Fuser(FuseSettings(smoothing=0.5))
    fuser.fuse(window(0, 4, visual=[FrameEncoding(1.0, vec(1, 0), (Label("dog", 0.8),))]))
    fused = fuser.fuse(window(4, 8, visual=[FrameEncoding(5.0, vec(1, 0), (Label("dog", 0.2),))]))
    assert fused.visual == (Label("dog", 0.5),)


def test_audio_loudness_tags_and_speech_spans_are_pooled_and_clipped():
    chunks = [
        AudioEncoding(
            0.0, 1.0, -20.0, -10.0, (TimeSpan(0.5, 1.0),), labels=(Label("Speech", 0.7),)
        ),
        AudioEncoding(1.0, 2.0, -20.0, -3.0, (TimeSpan(1.0, 2.5),), labels=(Label("Alarm", 0.4),)),
    ]
    fused = Fuser().fuse(window(0, 2, audio=chunks))
    assert fused.rms_dbfs == pytest.approx(-20.0)
    assert fused.peak_dbfs == -3.0
    assert fused.speech_spans == (TimeSpan(0.5, 2.0),)
    assert [label.label for label in fused.audio] == ["Speech", "Alarm"]


def test_transcript_words_are_clipped_to_the_window():
    segment = TranscriptSegment(
        1.0,
        6.0,
        "a package has arrived",
        "en",
        (
            Word(1.0, 1.5, "a"),
            Word(1.5, 2.5, "package"),
            Word(4.5, 5.0, "has"),
            Word(5.0, 6.0, "arrived"),
        ),
    )
    fused = Fuser().fuse(window(0, 4, speech=[segment]))
    assert fused.speech_text == "a package"
    assert fused.transcript[0].end == 2.5


def test_subtitles_ocr_and_text_embedding():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.ones((len(texts), 3), np.float32)

    ocr = [
        OcrResult(1.0, (OcrText("EXIT 12", ((0, 0),) * 4, 0.9),)),
        OcrResult(2.0, (OcrText("EXIT 12", ((0, 0),) * 4, 0.9),)),
    ]
    cue = SubtitleCue("src", 0.5, 1.5, "Hello there")
    fused = Fuser(embed_text=embed).fuse(window(0, 4, ocr=ocr, subtitles=[cue]))
    assert fused.ocr == ("EXIT 12",)
    assert fused.subtitle_text == "Hello there"
    assert calls == [["Hello there", "EXIT 12"]]
    assert np.linalg.norm(fused.text_mean) == pytest.approx(1.0)


def test_a_cut_is_counted_once_when_windows_overlap():
    w = Windower("src", [Modality.VISUAL], 4.0, 2.0)
    for t in range(10):
        embedding = vec(1, 0) if t < 5 else vec(0, 1)
        w.add(Modality.VISUAL, FrameEncoding(float(t), embedding))
    fuser = Fuser(FuseSettings(hop_s=2.0))
    fused = [fuser.fuse(c) for c in w.ready() + w.finish()]
    changes = [(f.start, f.scene_change_at) for f in fused if f.scene_change > 0.5]
    assert changes == [(4.0, 5.0)]


def test_empty_window_fuses_to_nothing():
    fused = Fuser().fuse(window(0, 4))
    assert fused.visual == () and fused.fused.size == 0 and fused.rms_dbfs is None


def test_a_windows_objects_keep_the_box_and_frame_of_their_best_detection():
    from mmlm_stream.records.results import Detection, DetectionResult

    person_far = Detection("person", 0.6, (0.1, 0.1, 0.2, 0.4))
    person_near = Detection("person", 0.9, (0.5, 0.2, 0.9, 0.95))
    dog = Detection("dog", 0.7, (0.0, 0.6, 0.3, 1.0))
    fused = Fuser().fuse(
        window(
            0,
            4,
            objects=[
                DetectionResult(1.0, (person_far, dog)),
                DetectionResult(2.0, (person_near,)),
            ],
        )
    )
    person, second = fused.objects
    assert (person.label, person.score, person.box, person.time) == (
        "person", 0.9, (0.5, 0.2, 0.9, 0.95), 2.0
    )  # fmt: skip
    assert (second.label, second.box, second.time) == ("dog", (0.0, 0.6, 0.3, 1.0), 1.0)
