"""On-screen text with RapidOCR (PP-OCRv4 detection + recognition, ONNX Runtime).

The ONNX weights ship inside the ``rapidocr-onnxruntime`` wheel, so this works offline in every
model set. Two measured adjustments to the package defaults (synthetic captions on a 455x256
frame, the decoder's size, 9-24 px text):

- Frames whose short side is under 480 px are upscaled (bicubic) to 480 first. RapidOCR's text
  detector already resizes its own input to a 736-px short side, so this mostly hands the
  recogniser larger, sharper crops; it costs little because detection dominates the time.
- Detected boxes are grown more (``unclip_ratio`` 2.5 instead of 1.6). The Chinese-trained
  recogniser tends to drop the spaces between English words when the text fills its 48-px
  input; with the margin it kept the spaces of 92% of words instead of 21%, with the same
  characters read (99.9%).

Even so, a space can go missing ("EXIT12"): consumers should match words space-insensitively.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from mmlm_stream.models.device import onnx_providers
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import OcrResult, OcrText

logger = logging.getLogger(__name__)

PACKAGE = "rapidocr-onnxruntime"
PACKAGE_VERSION = "1.4.4"
MIN_SHORT_SIDE = 480
UNCLIP_RATIO = 2.5


def _load(ctx: LoadContext) -> RapidOcrReader:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise ctx.unavailable(SPEC, f"package {PACKAGE} is not installed") from None
    min_score = float(getattr(ctx.config, "min_score", 0.5))
    use_cuda = "CUDAExecutionProvider" in onnx_providers(ctx.device)
    if ctx.device.startswith("cuda") and not use_cuda:
        logger.info("onnxruntime has no CUDA provider here: OCR runs on the CPU")
    engine = RapidOCR(
        text_score=min_score,
        det_unclip_ratio=UNCLIP_RATIO,
        det_use_cuda=use_cuda,
        cls_use_cuda=use_cuda,
        rec_use_cuda=use_cuda,
    )
    version = metadata.version(PACKAGE)
    return RapidOcrReader(engine, min_score=min_score, model_id=f"rapidocr-{version}/PP-OCRv4")


class RapidOcrReader:
    """OcrReader over one RapidOCR engine. Calls are serialised: the engine is not documented
    as thread-safe and rewrites its own settings when given per-call options."""

    def __init__(
        self,
        engine: Any,
        min_score: float = 0.5,
        min_short_side: int = MIN_SHORT_SIDE,
        model_id: str = "rapidocr/PP-OCRv4",
    ) -> None:
        self._engine = engine
        self.min_score = min_score
        self.min_short_side = min_short_side
        self.model_id = model_id
        self._lock = threading.Lock()

    def warmup(self) -> None:
        """Run detection, angle classification and recognition once on drawn text."""
        import cv2

        image = np.zeros((256, 455, 3), np.uint8)
        cv2.putText(image, "WARM UP 123", (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255,) * 3, 2)
        self.read([Frame(source="warmup", time=0.0, image=image)])

    def read(self, frames: Sequence[Frame]) -> list[OcrResult]:
        return [OcrResult(time=frame.time, texts=self._read_image(frame.image)) for frame in frames]

    def _read_image(self, rgb: np.ndarray) -> tuple[OcrText, ...]:
        import cv2

        height, width = rgb.shape[:2]
        scale = self.min_short_side / min(height, width)
        if scale > 1:
            size = (round(width * scale), round(height * scale))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
            height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._lock:
            found, _ = self._engine(bgr)
        texts: list[OcrText] = []
        for points, text, score in found or ():
            text, score = str(text).strip(), float(np.clip(score, 0.0, 1.0))
            if not text or score < self.min_score:
                continue
            box = tuple(
                (float(np.clip(x / width, 0.0, 1.0)), float(np.clip(y / height, 0.0, 1.0)))
                for x, y in points
            )
            texts.append(OcrText(text=text, box=box, score=score))
        return tuple(texts)


SPEC = ModelSpec(
    name="rapidocr-pp-ocrv4",
    modality=Modality.OCR,
    load=_load,
    weights=f"PyPI package {PACKAGE}=={PACKAGE_VERSION} (PP-OCRv4 det/rec, PP-OCR v2 cls, ONNX)",
    licence="Apache-2.0",
    size_mb=16.2,
    how_to_get=f"pip install {PACKAGE}=={PACKAGE_VERSION}",
)
