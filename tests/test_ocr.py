"""On-screen text: RapidOCR reads rendered captions at the decoder's frame size."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.ocr_rapidocr import MIN_SHORT_SIDE, RapidOcrReader
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, resolve
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import OcrReader, OcrResult

WIDTH, HEIGHT = 455, 256  # a 16:9 frame at the decoder's default short side


def caption_frame(lines: list[tuple[str, int, int]], time: float = 0.0) -> Frame:
    """White text (text, top y, font size) on a dark frame, as a broadcast overlay would be."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (20, 24, 40))
    draw = ImageDraw.Draw(image)
    for text, top, size in lines:
        draw.text((14, top), text, fill=(255, 255, 255), font=ImageFont.load_default(size=size))
    return Frame(source="test", time=time, image=np.asarray(image))


def words_found(expected: str, result: OcrResult) -> float:
    """Share of expected words read, ignoring case and the spaces the recogniser may drop."""
    read = "".join("".join(text.text.split()) for text in result.texts).lower()
    words = expected.lower().split()
    return sum(word in read for word in words) / len(words)


@pytest.fixture(scope="module")
def reader(default_models: ModelsConfig) -> OcrReader:
    encoder = load_encoder(Modality.OCR, default_models)
    assert isinstance(encoder, OcrReader)
    return encoder


@pytest.mark.models
@pytest.mark.slow
def test_reads_rendered_captions_at_decoder_size(reader: OcrReader) -> None:
    headline, sign = "WELCOME TO THE EVENING BROADCAST", "EXIT 12"
    frame = caption_frame([(headline, 30, 22), (sign, 150, 28)], time=7.5)

    [result] = reader.read([frame])

    assert result.time == 7.5
    assert words_found(headline, result) >= 0.8
    assert words_found(sign, result) >= 0.8
    for text in result.texts:
        assert len(text.box) == 4
        assert all(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 for x, y in text.box)
        assert 0.5 <= text.score <= 1.0
    exit_sign = next(t for t in result.texts if "exit" in t.text.lower())
    top = min(y for _, y in exit_sign.box)
    assert 0.5 < top < 0.7  # drawn at y=150 of 256: boxes map back to the original frame


@pytest.mark.models
def test_blank_frame_reads_no_text(reader: OcrReader) -> None:
    blank = Frame(source="test", time=1.0, image=np.full((HEIGHT, WIDTH, 3), 30, np.uint8))

    assert reader.read([blank]) == [OcrResult(time=1.0, texts=())]


@pytest.mark.models
def test_empty_batch_reads_nothing(reader: OcrReader) -> None:
    assert reader.read([]) == []


class FakeEngine:
    """Stands in for RapidOCR: records what it was given, answers fixed lines."""

    def __init__(self, answer: list[Any] | None) -> None:
        self.answer = answer
        self.images: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> tuple[list[Any] | None, list[float]]:
        self.images.append(image)
        return self.answer, [0.0]


def test_small_frames_are_upscaled_and_given_to_the_engine_as_bgr() -> None:
    engine = FakeEngine(None)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = 200  # red in RGB

    RapidOcrReader(engine).read([Frame(source="t", time=0.0, image=image)])

    [seen] = engine.images
    assert min(seen.shape[:2]) == MIN_SHORT_SIDE
    assert seen.shape[1] == round(WIDTH * MIN_SHORT_SIDE / HEIGHT)
    assert seen[..., 2].min() == 200 and seen[..., 0].max() == 0


def test_boxes_are_fractions_of_the_frame_and_weak_text_is_dropped() -> None:
    scale = MIN_SHORT_SIDE / HEIGHT
    box = [[10 * scale, 20 * scale], [110 * scale, 20 * scale], [110 * scale, 40 * scale]]
    box.append([10 * scale, 40 * scale])
    engine = FakeEngine([[box, "NEWS", 0.93], [box, "n0ise", 0.31], [box, "  ", 0.99]])

    frame = Frame(source="t", time=2.0, image=np.zeros((HEIGHT, WIDTH, 3), np.uint8))

    [result] = RapidOcrReader(engine, min_score=0.5).read([frame])

    [text] = result.texts
    assert text.text == "NEWS" and text.score == pytest.approx(0.93)
    assert text.box[0] == pytest.approx((10 / WIDTH, 20 / HEIGHT), abs=2e-3)
    assert text.box[2] == pytest.approx((110 / WIDTH, 40 / HEIGHT), abs=2e-3)


def test_large_frames_are_not_resized() -> None:
    engine = FakeEngine(None)

    RapidOcrReader(engine).read(
        [Frame(source="t", time=0.0, image=np.zeros((720, 1280, 3), np.uint8))]
    )

    assert engine.images[0].shape == (720, 1280, 3)


def test_missing_package_is_a_clear_unavailable_error(
    default_models: ModelsConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    resolved = resolve(Modality.OCR, default_models)
    assert resolved is not None

    with pytest.raises(ModelUnavailable, match="pip install rapidocr-onnxruntime") as error:
        resolved.spec.load(resolved.context)

    assert "\n" not in str(error.value)
    assert "ocr model" in str(error.value) and "'default'" in str(error.value)
