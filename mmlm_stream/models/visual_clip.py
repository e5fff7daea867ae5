"""Hub frame encoder: CLIP (or SigLIP) zero-shot labels and image embeddings.

Labels are open-vocabulary: each frame is compared with "a photo of a {label}" for every label
of the configured vocabulary (or the built-in monitoring list below). Frames and free-text
queries share the CLIP space, so ``score_queries`` compares them directly. The tiny set runs the
same code on a random CLIP (right shapes, meaningless labels).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from mmlm_stream.config.models import VisualModelConfig
from mmlm_stream.models.clip_common import (
    DEFAULT_MODEL_ID,
    HUB_HOW_TO_GET,
    HUB_WEIGHTS,
    TINY_WEIGHTS,
    ClipBundle,
    load_clip,
)
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoding, Label

logger = logging.getLogger(__name__)

PROMPT = "a photo of a {}"
DEFAULT_VOCABULARY: tuple[str, ...] = (
    # people and what they do
    "person", "man", "woman", "child", "baby", "crowd", "group of people", "person walking",
    "person running", "person sitting", "person lying on the ground", "person falling",
    "person riding a bicycle", "person on a phone", "person carrying a box", "police officer",
    "firefighter", "worker in a safety vest", "delivery person", "face", "hand",
    # vehicles and traffic
    "car", "truck", "bus", "van", "motorcycle", "bicycle", "scooter", "train", "tram",
    "airplane", "helicopter", "drone", "boat", "ship", "tractor", "forklift", "ambulance",
    "police car", "fire truck", "taxi", "pickup truck", "trailer", "traffic light",
    "stop sign", "parking lot", "road", "highway", "crosswalk", "traffic jam", "car crash",
    "license plate",
    # animals
    "dog", "cat", "bird", "horse", "cow", "sheep", "pig", "chicken", "deer", "fox", "bear",
    "rabbit", "squirrel", "rat", "mouse", "fish", "insect", "spider", "snake", "monkey",
    # hazards and events
    "fire", "smoke", "flames", "explosion", "flood", "water leak", "puddle", "snow", "ice",
    "rain", "fog", "lightning", "broken glass", "fallen tree", "spilled liquid", "debris",
    "weapon", "gun", "knife", "fight", "protest", "accident", "empty scene", "darkness",
    # things people carry, deliver or leave
    "package", "cardboard box", "parcel on a doorstep", "bag", "backpack", "suitcase",
    "handbag", "umbrella", "shopping cart", "trash bag", "trash can", "pallet", "crate",
    "bottle", "cup", "mug", "coffee", "laptop", "cell phone", "tablet", "keys", "wallet",
    "book", "paper", "sign", "poster", "screen", "television", "camera", "ladder", "tool",
    "helmet", "mask", "glasses", "hat",
    # buildings and places
    "door", "open door", "window", "open window", "gate", "fence", "wall", "stairs",
    "elevator", "corridor", "room", "kitchen", "bathroom", "bedroom", "living room",
    "office", "classroom", "shop", "supermarket", "warehouse", "factory", "garage",
    "construction site", "street", "sidewalk", "building", "house", "garden", "yard",
    "park", "playground", "field", "forest", "beach", "sea", "river", "lake", "mountain",
    "sky", "bridge", "tunnel", "station", "airport", "stadium", "restaurant", "hospital",
    # furniture and objects indoors
    "chair", "table", "desk", "sofa", "bed", "shelf", "cabinet", "refrigerator", "oven",
    "stove", "sink", "toilet", "lamp", "clock", "plant", "flower", "tree", "computer",
    "keyboard", "machine", "conveyor belt", "robot", "vending machine", "cash register",
    # food and drink
    "food", "plate of food", "pizza", "sandwich", "fruit", "vegetables", "cake", "drink",
    "glass of water", "wine", "beer", "espresso",
    # sport and leisure
    "ball", "football", "basketball", "tennis", "swimming pool", "skateboard", "ski",
    "rocket", "space shuttle", "astronaut", "fireworks", "music instrument", "guitar",
    "text", "logo", "map", "chart", "cartoon", "video game",
)  # fmt: skip


class ClipFrameEncoder:
    """Zero-shot labels (softmax over the vocabulary) and CLIP image embeddings per frame.

    Label scores are the softmax over the vocabulary of ``logit_scale * cosine`` (what CLIP's
    zero-shot classifier computes), so they sum to 1 across the vocabulary and say which of
    these labels fits best, not whether any fits. ``score_queries`` answers "does this text
    describe the frame" independently per query: the frame-text cosine through a sigmoid
    (``ClipBundle.query_scores``: SigLIP's own bias, a fixed calibration for CLIP).
    """

    def __init__(
        self, bundle: ClipBundle, *, batch_size: int, top_k: int, vocabulary: Sequence[str]
    ) -> None:
        self.model_id = bundle.model_id
        self.embedding_dim = bundle.embed_dim
        self._bundle = bundle
        self._batch_size = batch_size
        self._top_k = top_k
        self.vocabulary = tuple(dict.fromkeys(label.strip() for label in vocabulary if label))
        self._vocabulary_embeddings: np.ndarray | None = None
        self._lock = threading.Lock()

    def warmup(self) -> None:
        """Embed the vocabulary prompts and run frames at batch 1 and the full batch size."""
        frame = Frame("warmup", 0.0, np.full((256, 341, 3), 127, np.uint8))
        self.encode([frame])
        if self._batch_size > 1:
            self.encode([frame] * self._batch_size)

    def _vocabulary_matrix(self) -> np.ndarray:
        with self._lock:
            if self._vocabulary_embeddings is None:
                prompts = [PROMPT.format(label) for label in self.vocabulary]
                self._vocabulary_embeddings = self._bundle.text_embeddings(
                    prompts, self._batch_size
                )
            return self._vocabulary_embeddings

    def image_embeddings(self, frames: Sequence[Frame]) -> np.ndarray:
        """L2-normalised CLIP image features, shape (len(frames), embedding_dim)."""
        return self._bundle.image_embeddings([frame.image for frame in frames], self._batch_size)

    def encode(self, frames: Sequence[Frame]) -> list[FrameEncoding]:
        if not frames:
            return []
        embeddings = self.image_embeddings(frames)
        vocabulary = self._vocabulary_matrix()
        logits = self._bundle.label_logits(embeddings @ vocabulary.T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        k = min(self._top_k, len(self.vocabulary))
        results = []
        for frame, embedding, probs in zip(frames, embeddings, probabilities, strict=True):
            top = np.argsort(-probs)[:k]
            labels = tuple(
                Label(self.vocabulary[i], float(np.clip(probs[i], 0.0, 1.0))) for i in top
            )
            results.append(FrameEncoding(time=frame.time, embedding=embedding, labels=labels))
        return results

    def score_queries(self, frames: Sequence[Frame], texts: Sequence[str]) -> np.ndarray:
        if not frames or not texts:
            return np.zeros((len(frames), len(texts)), np.float32)
        return self.score_embeddings(self.image_embeddings(frames), texts)

    def score_embeddings(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Query scores from image embeddings already computed (``FrameEncoding.embedding``).

        Blank queries score 0: they describe nothing.
        """
        scores = np.zeros((len(embeddings), len(texts)), np.float32)
        columns = [i for i, text in enumerate(texts) if text.strip()]
        if len(embeddings) == 0 or not columns:
            return scores
        queries = self._bundle.text_embeddings([texts[i] for i in columns], self._batch_size)
        scores[:, columns] = self._bundle.query_scores(np.asarray(embeddings) @ queries.T)
        return np.clip(scores, 0.0, 1.0)


def _load(ctx: LoadContext, spec: ModelSpec) -> ClipFrameEncoder:
    bundle = load_clip(ctx, spec)
    config = ctx.config
    top_k, vocabulary = 5, list(DEFAULT_VOCABULARY)
    if isinstance(config, VisualModelConfig):
        top_k = config.top_k
        vocabulary = config.vocabulary or vocabulary
    return ClipFrameEncoder(bundle, batch_size=ctx.batch_size, top_k=top_k, vocabulary=vocabulary)


def load(ctx: LoadContext) -> ClipFrameEncoder:
    return _load(ctx, SPEC)


def load_tiny(ctx: LoadContext) -> ClipFrameEncoder:
    return _load(ctx, TINY)


SPEC = ModelSpec(
    name=DEFAULT_MODEL_ID,
    modality=Modality.VISUAL,
    load=load,
    weights=HUB_WEIGHTS,
    licence="MIT",
    size_mb=605.0,
    how_to_get=HUB_HOW_TO_GET,
)
TINY = ModelSpec(
    name="tiny-clip",
    modality=Modality.VISUAL,
    load=load_tiny,
    weights=TINY_WEIGHTS,
    licence="n/a (random weights)",
    size_mb=0.3,
    how_to_get="built automatically; check that models.cache_dir is writable",
)
