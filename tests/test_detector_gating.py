"""The detector runs only where something may be there (``operators.detector_gate``): never
again on a still, empty picture, always when something appears, moves or comes alive; a camera
that pans or zooms over a still scene does not count as motion, and carried boxes follow it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scenes import camera, textured_scene, zoomed

from mmlm_stream.config.models import ModelsConfig, ObjectsModelConfig
from mmlm_stream.pipeline.encoding import LocalEncoders, ModalityEncoders
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Detection, DetectionResult, FrameEncoding, Label

ROOM = np.full((256, 455, 3), 90, np.uint8)
ROOM[:, :200] = 140  # a wall and a floor: still, and with nothing in it


def with_box(x0: int, image: np.ndarray = ROOM) -> np.ndarray:
    """The room with a 60x60 dark object whose left edge is at ``x0``."""
    out = image.copy()
    out[100:160, x0 : x0 + 60] = 20
    return out


class FakeModels(ModalityEncoders):
    """Frames labelled ``labels``; the detector "finds" a box wherever the dark object is."""

    def __init__(self, models: ModelsConfig, labels: tuple[Label, ...] = ()) -> None:
        super().__init__(models)
        self.labels = labels
        self.detected: list[float] = []

    def run(self, modality: Modality, items: Sequence[Any]) -> Any:
        if modality is Modality.VISUAL:
            return [FrameEncoding(f.time, np.zeros(4, np.float32), self.labels) for f in items]
        assert modality is Modality.OBJECTS
        self.detected += [f.time for f in items]
        return [
            DetectionResult(f.time, (Detection("box", 0.9, (0.1, 0.1, 0.2, 0.2)),))
            if (f.image < 40).any()
            else DetectionResult(f.time)
            for f in items
        ]

    def model_ids(self) -> dict[str, str]:
        return {}


def models(**detector: Any) -> ModelsConfig:
    return ModelsConfig(set="default", device="cpu", objects=ObjectsModelConfig(**detector))


def frames(images: Sequence[np.ndarray], source: str = "cam") -> list[Frame]:
    return [Frame(source, float(t), image) for t, image in enumerate(images)]


def encode_one_by_one(encoders: ModalityEncoders, batch: Sequence[Frame]) -> list[DetectionResult]:
    return [d for f in batch for d in encoders.encode_frames([f]).detections]


def test_a_still_empty_picture_is_detected_once():
    fake = FakeModels(models())
    results = encode_one_by_one(fake, frames([ROOM] * 8))
    assert fake.detected == [0.0]
    assert fake.detector_runs == 1
    assert [r.time for r in results] == [float(t) for t in range(8)]
    assert all(r.detections == () for r in results)


def test_the_detector_runs_when_an_object_appears_and_the_scene_keeps_it_while_still():
    fake = FakeModels(models())
    images = [ROOM] * 3 + [with_box(300)] * 4
    results = encode_one_by_one(fake, frames(images))
    assert fake.detected == [0.0, 3.0]
    assert [bool(r.detections) for r in results] == [False] * 3 + [True] * 4
    assert all(r.time == t for t, r in enumerate(results))


def test_an_object_that_moves_is_detected_again_and_leaving_clears_it():
    fake = FakeModels(models())
    images = [with_box(50), with_box(50), with_box(250), with_box(250), ROOM, ROOM]
    results = encode_one_by_one(fake, frames(images))
    assert fake.detected == [0.0, 2.0, 4.0]
    assert [bool(r.detections) for r in results] == [True] * 4 + [False] * 2


def test_compression_noise_is_not_motion():
    rng = np.random.default_rng(0)
    noisy = [
        np.clip(ROOM.astype(int) + rng.integers(-6, 7, ROOM.shape), 0, 255).astype(np.uint8)
        for _ in range(6)
    ]
    fake = FakeModels(models())
    encode_one_by_one(fake, frames(noisy))
    assert fake.detected == [0.0]


def test_a_still_scene_is_detected_again_every_refresh_s():
    fake = FakeModels(models(refresh_s=10.0))
    encode_one_by_one(fake, frames([ROOM] * 25))
    assert fake.detected == [0.0, 10.0, 20.0]


def test_an_animal_or_person_appearing_in_the_frame_labels_runs_the_detector_once():
    fake = FakeModels(models())
    encode_one_by_one(fake, frames([ROOM] * 2))
    fake.labels = (Label("tabby", 0.5), Label("carton", 0.2))
    encode_one_by_one(fake, [Frame("cam", float(t), ROOM) for t in range(2, 6)])
    assert fake.detected == [0.0, 2.0]  # it came alive at t=2; a still cat is carried
    unlikely = FakeModels(models())
    encode_one_by_one(unlikely, frames([ROOM] * 2))
    unlikely.labels = (Label("tabby", 0.1), Label("carton", 0.8))
    encode_one_by_one(unlikely, [Frame("cam", float(t), ROOM) for t in range(2, 6)])
    assert unlikely.detected == [0.0]


class BoxAt(FakeModels):
    """A detector that finds one box, at a fixed place of the first frame it sees."""

    def run(self, modality: Modality, items: Sequence[Any]) -> Any:
        if modality is Modality.VISUAL:
            return super().run(modality, items)
        self.detected += [f.time for f in items]
        return [
            DetectionResult(f.time, (Detection("car", 0.9, (0.5, 0.4, 0.6, 0.6)),)) for f in items
        ]


def test_a_slow_pan_over_a_still_scene_is_not_motion_and_the_boxes_follow_the_picture():
    scene = textured_scene()
    fake = BoxAt(models())
    results = encode_one_by_one(fake, frames([camera(scene, 100 + 8 * t, 100) for t in range(6)]))
    assert fake.detected == [0.0]  # 8 px/s: 40 px (6 %) of new picture after 5 s
    x0, _, x1, _ = results[5].detections[0].box
    assert x0 == pytest.approx(0.5 - 40 / 640, abs=0.01)  # moved left with the picture
    assert x1 == pytest.approx(0.6 - 40 / 640, abs=0.01)


def test_a_pan_that_brings_enough_new_picture_into_view_runs_the_detector():
    scene = textured_scene()
    fake = BoxAt(models())
    encode_one_by_one(fake, frames([camera(scene, 100 + 30 * t, 100) for t in range(6)]))
    assert fake.detected == [0.0, 3.0]  # 90 px (14 %) new at t=3, then measured from there


def test_zooming_in_a_little_scales_the_boxes_and_zooming_in_more_finds_them_again():
    scene = textured_scene()
    widths = [640, 624, 608, 592, 576, 536]  # 1.0 .. 1.19x
    fake = BoxAt(models())
    results = encode_one_by_one(fake, frames([zoomed(scene, (640, 360), w) for w in widths]))
    assert fake.detected == [0.0, 5.0]  # past MAX_ZOOM (1.15x) at 536 px
    zoom = 640 / 576  # at t=4, about the centre
    box = results[4].detections[0].box
    expected = (0.5, 0.5 - 0.1 * zoom, 0.5 + 0.1 * zoom, 0.5 + 0.1 * zoom)
    assert box == pytest.approx(expected, abs=0.01)


def test_an_object_moving_while_the_camera_pans_is_still_motion():
    scene = textured_scene()
    images = [camera(scene, 100 + 8 * t, 100) for t in range(4)]
    images[3] = with_box(300, images[3])
    fake = BoxAt(models())
    encode_one_by_one(fake, frames(images))
    assert fake.detected == [0.0, 3.0]


def test_in_one_batch_still_frames_follow_the_frame_detected_before_them():
    fake = FakeModels(models())
    batch = frames([ROOM, with_box(300), with_box(300), with_box(300)])
    results = fake.encode_frames(batch).detections
    assert fake.detected == [0.0, 1.0]
    assert [bool(r.detections) for r in results] == [False, True, True, True]
    assert [r.time for r in results] == [0.0, 1.0, 2.0, 3.0]


def test_sources_are_gated_apart():
    fake = FakeModels(models())
    batch = [*frames([ROOM] * 3, source="a"), *frames([with_box(100)] * 3, source="b")]
    results = fake.encode_frames(batch).detections
    assert len(fake.detected) == 2
    assert [bool(r.detections) for r in results] == [False] * 3 + [True] * 3


def test_ungated_detector_sees_every_due_frame():
    fake = FakeModels(models(gated=False))
    encode_one_by_one(fake, frames([ROOM] * 5))
    assert fake.detected == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_detector_rate_still_applies_before_the_gate():
    fake = FakeModels(models(fps=0.5))
    encode_one_by_one(fake, frames([ROOM, with_box(200), with_box(200), ROOM]))
    # due: t=0 and t=2 only; t=2 shows the object, so it runs there
    assert fake.detected == [0.0, 2.0]


@pytest.mark.models
@pytest.mark.slow
def test_real_detector_skips_a_still_empty_room_and_finds_the_cat_that_walks_in(
    default_models: ModelsConfig,
):
    from skimage import data

    cat = np.asarray(Image.fromarray(data.chelsea()).resize((228, 150)))
    with_cat = ROOM.copy()
    with_cat[90:240, 200:428] = cat
    encoders = LocalEncoders(default_models)
    results = encode_one_by_one(encoders, frames([ROOM] * 5 + [with_cat] * 2))
    assert encoders.detector_runs == 2  # the first room and the cat; the still cat is carried
    assert all(r.detections == () for r in results[:5])
    assert "cat" in [d.label for d in results[5].detections]
    assert "cat" in [d.label for d in results[6].detections]
