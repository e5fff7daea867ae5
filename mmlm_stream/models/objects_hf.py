"""People and objects with a transformers object-detection model (hub set) and its tiny twin.

The hub model is RT-DETR R18 (``PekingU/rtdetr_r18vd``, Apache-2.0, COCO, 46.5 AP): pure
transformers (no timm), NMS-free and fast. Any ``AutoModelForObjectDetection`` checkpoint with
a ``post_process_object_detection`` processor works in its place (``models.objects.model``:
an id in the local Hugging Face cache, or a folder). Nothing is downloaded unless
``models.allow_download`` is true.

The tiny set builds a randomly initialised RT-DETR with a few thousand parameters and COCO
label names from its config, saves it once under ``<cache_dir>/tiny/detector`` and loads it
back through the same ``from_pretrained`` path as the hub model: its detections are
meaningless, its types and plumbing are real.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.models.objects_ssd_mobilenet import COCO_LABELS
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Detection, DetectionResult
from mmlm_stream.util.atomic_folder import build_folder

logger = logging.getLogger(__name__)

HUB_MODEL = "PekingU/rtdetr_r18vd"
TINY_FOLDER = ("tiny", "detector")
TINY_INPUT = 64
NMS_IOU = 0.7
MAX_DETECTIONS = 100
_REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


def _from_pretrained(ctx: LoadContext, spec: ModelSpec, source: str) -> HfObjectDetector:
    """The one loading path of both sets: a local folder or an id in the local HF cache."""
    try:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        dtype = ctx.torch_dtype()
    except ImportError as error:
        raise ctx.unavailable(spec, f"{_first_line(error)} (install the serve extra)") from None
    path = Path(source).expanduser()
    if source.startswith(("/", ".", "~")) and not path.is_dir():
        raise ctx.unavailable(spec, f"folder {path} does not exist")
    location = str(path) if path.is_dir() else source
    local_only = not ctx.allow_download
    try:
        processor = AutoImageProcessor.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForObjectDetection.from_pretrained(
            location, local_files_only=local_only, dtype=dtype
        )
    except (OSError, ValueError) as error:
        logger.debug("loading %s failed", location, exc_info=True)
        if local_only and not path.is_dir():
            raise ctx.unavailable(spec, "not in the local Hugging Face cache") from None
        raise ctx.unavailable(spec, f"could not be loaded ({_first_line(error)})") from None
    model.to(ctx.device).eval()
    threshold = float(getattr(ctx.config, "threshold", 0.5))
    return HfObjectDetector(model, processor, location, threshold, ctx.batch_size)


class HfObjectDetector:
    """ObjectDetector over a transformers detection model; boxes come back as fractions."""

    def __init__(
        self, model: Any, processor: Any, model_id: str, threshold: float, batch_size: int
    ) -> None:
        self._model = model
        self._processor = processor
        self.model_id = model_id
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self._labels: dict[int, str] = {int(k): v for k, v in model.config.id2label.items()}
        self._lock = threading.Lock()

    def warmup(self) -> None:
        self.detect([Frame(source="warmup", time=0.0, image=np.zeros((256, 455, 3), np.uint8))])

    def detect(self, frames: Sequence[Frame]) -> list[DetectionResult]:
        results: list[DetectionResult] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            found = self._detect_batch([frame.image for frame in batch])
            results.extend(
                DetectionResult(time=frame.time, detections=detections)
                for frame, detections in zip(batch, found, strict=True)
            )
        return results

    def _detect_batch(self, images: list[np.ndarray]) -> list[tuple[Detection, ...]]:
        import torch
        from torchvision.ops import batched_nms

        images = [image if image.flags.writeable else image.copy() for image in images]
        inputs = self._processor(images=images, return_tensors="pt")
        inputs = {name: value.to(self._model.device) for name, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        with self._lock, torch.inference_mode():
            outputs = self._model(**inputs)
            outputs.logits = outputs.logits.float()
            outputs.pred_boxes = outputs.pred_boxes.float()
            per_image = self._processor.post_process_object_detection(
                outputs, threshold=self.threshold
            )
        found: list[tuple[Detection, ...]] = []
        for item in per_image:
            boxes = item["boxes"].clamp(0.0, 1.0)
            scores, labels = item["scores"].clamp(0.0, 1.0), item["labels"]
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
            keep = batched_nms(boxes, scores, labels, NMS_IOU)[:MAX_DETECTIONS]
            found.append(
                tuple(
                    Detection(
                        label=self._labels.get(label, str(label)),
                        score=float(score),
                        box=(box[0], box[1], box[2], box[3]),
                    )
                    for box, score, label in zip(
                        boxes[keep].tolist(),
                        scores[keep].tolist(),
                        labels[keep].tolist(),
                        strict=True,
                    )
                )
            )
        return found


def _load_hub(ctx: LoadContext) -> HfObjectDetector:
    return _from_pretrained(ctx, SPEC, ctx.model or HUB_MODEL)


def _tiny_is_built(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def build_tiny(folder: Path) -> Path:
    """Save the tiny RT-DETR into ``folder`` once: same seed, same bytes; written to a temporary
    sibling and renamed, so a concurrent or interrupted build never leaves half a model."""
    if _tiny_is_built(folder):
        return folder
    import torch
    from transformers import (
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessor,
        RTDetrResNetConfig,
    )

    id2label = dict(enumerate(COCO_LABELS))
    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 16, 32],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    config = RTDetrConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        encoder_in_channels=[16, 16, 32],
        encoder_hidden_dim=16,
        encoder_layers=1,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=16,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        num_queries=20,
        num_denoising=0,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RTDetrForObjectDetection(config).eval()
    processor = RTDetrImageProcessor(size={"height": TINY_INPUT, "width": TINY_INPUT})

    def fill(staging: Path) -> None:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)

    build_folder(folder, fill, complete=_tiny_is_built)
    logger.info("built tiny detector in %s", folder)
    return folder


def _load_tiny(ctx: LoadContext) -> HfObjectDetector:
    source = ctx.model or str(build_tiny(ctx.cache_dir.joinpath(*TINY_FOLDER)))
    return _from_pretrained(ctx, TINY, source)


SPEC = ModelSpec(
    name=HUB_MODEL,
    modality=Modality.OBJECTS,
    load=_load_hub,
    weights=f"Hugging Face {HUB_MODEL} (local cache or a folder)",
    licence="Apache-2.0",
    size_mb=80.0,
    how_to_get=(
        f"run `hf download {HUB_MODEL}` once with network access, set "
        "models.allow_download: true, or point models.objects.model at a saved folder"
    ),
)

TINY = ModelSpec(
    name="tiny-rtdetr",
    modality=Modality.OBJECTS,
    load=_load_tiny,
    weights="random, built from a config into <cache_dir>/tiny/detector (tests only)",
    licence="Apache-2.0",
    size_mb=0.4,
    how_to_get="built automatically on first load; needs torch and transformers",
)
