"""Watch-query scoring: how well a natural-language query matches one fused window.

Pure given the encoders passed in. The default model set has no image-text space, so a query
is compared, in the text encoder's space, with what the window says about itself:

- label evidence (``visual``, ``objects``, ``audio``, ``fusion``): ``match(query, name) x
  label score``, where a label's match is the best over its names (ImageNet synonyms
  included). Frame labels are summed over the window's labels, capped at 1 (the expected match
  under the classifier's distribution, as ``EfficientNetFrameEncoder.score_queries`` does,
  because ImageNet spreads one cat over "tabby", "tiger cat", "Egyptian cat"); the other label
  kinds take the best label. YAMNet's "Silence" is skipped: it scores ~0.98 everywhere.
- text evidence (``speech`` segments, ``subtitles`` cues, ``ocr`` lines): ``match`` alone.
- ``visual`` (hub set): when the frame encoder exposes ``score_embeddings`` (a shared
  text-image space such as CLIP), its score of the query against the window's frame
  embeddings, best frame (``frame_mean`` when the frames are not at hand).

``match`` maps a cosine linearly to [0, 1]: at or below ``floor`` (0.35) nothing, at or above
``ceiling`` (0.70) a full match: all-MiniLM-L6-v2 cosines of unrelated names sit at 0.15-0.30,
"a cat" vs "tabby" is 0.68. A query's score is the best over all evidence.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mmlm_stream.records.evidence import FusedWindow
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoding, Label, OcrResult, TextEncoder

logger = logging.getLogger(__name__)

MATCH_FLOOR = 0.35
MATCH_CEILING = 0.70
SILENCE = "silence"


@dataclass(frozen=True, slots=True)
class QueryMatch:
    """A query's score on one window and the piece of evidence that gave it."""

    score: float
    modality: str = ""
    matched_text: str = ""
    time: float | None = None


class QueryScorer(Protocol):
    """Scores in [0, 1] of each query text on one window."""

    def __call__(self, window: FusedWindow, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class EvidenceQueryScorer(Protocol):
    """A scorer that also says which evidence matched (used for event evidence)."""

    def score_with_evidence(
        self, window: FusedWindow, texts: Sequence[str]
    ) -> list[QueryMatch]: ...


@runtime_checkable
class SharedSpaceFrameEncoder(Protocol):
    """A frame encoder whose image embeddings live in one space with text (CLIP, SigLIP)."""

    def score_embeddings(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Scores in [0, 1] of shape (len(embeddings), len(texts))."""
        ...


@functools.lru_cache(maxsize=16384)
def imagenet_synonyms(label: str) -> tuple[str, ...]:
    """Every ImageNet name of the class shown as ``label``; empty when unknown or not installed."""
    try:
        from mmlm_stream.records.imagenet_labels import synonyms

        return synonyms(label)
    except (ImportError, OSError, ValueError):
        return ()


def label_names(
    label: str, synonyms: Callable[[str], Sequence[str]] | None = None
) -> tuple[str, ...]:
    """The label, its comma-separated parts ("Beep, bleep") and any synonyms, de-duplicated."""
    names = [label, *(part.strip() for part in label.split(",") if "," in label)]
    if synonyms is not None:
        names += list(synonyms(label))
    return tuple(dict.fromkeys(name for name in names if name.strip()))


def text_match(
    cosine: np.ndarray, floor: float = MATCH_FLOOR, ceiling: float = MATCH_CEILING
) -> np.ndarray:
    """Calibrated match degree in [0, 1] of cosines (see the module docstring)."""
    return np.clip((cosine - floor) / (ceiling - floor), 0.0, 1.0)


class _EmbeddingCache:
    """LRU of text embeddings; the missing texts of one call are embedded in one batch."""

    def __init__(self, encoder: TextEncoder, size: int) -> None:
        self._encoder = encoder
        self._size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            vectors = np.asarray(self._encoder.embed(missing), np.float32)
            self._vectors.update(zip(missing, vectors, strict=True))
        for text in texts:
            self._vectors.move_to_end(text)
        rows = [self._vectors[t] for t in texts]
        while len(self._vectors) > max(self._size, len(texts)):
            self._vectors.popitem(last=False)
        if not rows:
            return np.zeros((0, self._encoder.embedding_dim), np.float32)
        return np.stack(rows)


class TextQueryScorer:
    """Watch-query scorer of the default set, plus the frame space of a CLIP-like encoder."""

    def __init__(
        self,
        text_encoder: TextEncoder,
        frame_encoder: object | None = None,
        *,
        floor: float = MATCH_FLOOR,
        ceiling: float = MATCH_CEILING,
        synonyms: Callable[[str], Sequence[str]] | None = imagenet_synonyms,
        cache_size: int = 8192,
    ) -> None:
        if not ceiling > floor:
            raise ValueError("ceiling must be above floor")
        self._floor, self._ceiling = floor, ceiling
        self._synonyms = synonyms
        self._cache = _EmbeddingCache(text_encoder, cache_size)
        self._frames = frame_encoder if isinstance(frame_encoder, SharedSpaceFrameEncoder) else None
        if frame_encoder is not None and self._frames is None:
            logger.info(
                "frame encoder %s has no shared text-image space; queries use labels and text",
                getattr(frame_encoder, "model_id", type(frame_encoder).__name__),
            )

    def __call__(self, window: FusedWindow, texts: Sequence[str]) -> np.ndarray:
        return np.array([m.score for m in self.score_with_evidence(window, texts)], np.float32)

    def score_with_evidence(self, window: FusedWindow, texts: Sequence[str]) -> list[QueryMatch]:
        """One ``QueryMatch`` per text: its best score and the evidence that gave it."""
        texts = list(texts)
        if not texts:
            return []
        queries = self._cache.get(texts)
        best = [QueryMatch(0.0) for _ in texts]

        def offer(
            scores: np.ndarray, modality: str, what: list[str], at: list[float | None]
        ) -> None:
            """Keep, per query, the best of ``scores`` (items x queries) if it beats the best."""
            if scores.size == 0:
                return
            top = scores.argmax(axis=0)
            for q, row in enumerate(top):
                score = float(scores[row, q])
                if score > best[q].score:
                    best[q] = QueryMatch(round(score, 4), modality, what[row], at[row])

        for modality, labels in (
            ("visual", window.visual),
            ("objects", window.objects),
            ("audio", window.audio),
            ("fusion", window.extra_labels),
        ):
            kept = [lb for lb in labels if lb.score > 0 and lb.label.strip().lower() != SILENCE]
            if not kept:
                continue
            weighted = (
                self._label_matches(kept, queries, modality)
                * np.array([lb.score for lb in kept], np.float32)[:, None]
            )
            names = [lb.label for lb in kept]
            if modality == "visual":
                total = np.minimum(weighted.sum(axis=0), 1.0)
                top = weighted.argmax(axis=0)
                for q in range(len(texts)):
                    if total[q] > best[q].score:
                        best[q] = QueryMatch(round(float(total[q]), 4), modality, names[top[q]])
            else:
                offer(weighted, modality, names, [None] * len(names))

        for modality, items in self._texts(window).items():
            if items:
                embedded = self._cache.get([text for text, _ in items])
                offer(
                    text_match(embedded @ queries.T, self._floor, self._ceiling),
                    modality,
                    [text for text, _ in items],
                    [at for _, at in items],
                )

        if self._frames is not None:
            frames = self._frame_embeddings(window)
            if frames:
                times, vectors = zip(*frames, strict=True)
                scores = np.clip(
                    np.nan_to_num(
                        np.asarray(self._frames.score_embeddings(np.stack(vectors), texts))
                    ),
                    0.0,
                    1.0,
                )
                offer(scores, "visual", ["" for _ in times], list(times))
        return best

    def _label_matches(self, labels: list[Label], queries: np.ndarray, modality: str) -> np.ndarray:
        """(labels x queries) match of each label: the best over its names."""
        synonyms = self._synonyms if modality == "visual" else None
        groups = [label_names(lb.label, synonyms) for lb in labels]
        flat = [name for names in groups for name in names]
        match = text_match(self._cache.get(flat) @ queries.T, self._floor, self._ceiling)
        starts = np.cumsum([0] + [len(names) for names in groups[:-1]])
        return np.maximum.reduceat(match, starts, axis=0)

    @staticmethod
    def _texts(window: FusedWindow) -> dict[str, list[tuple[str, float | None]]]:
        ocr_times: dict[str, float] = {}
        for result in window.contents.of(Modality.OCR):
            if isinstance(result, OcrResult):
                for text in result.texts:
                    ocr_times.setdefault(text.text, result.time)
        return {
            "speech": [(s.text.strip(), s.start) for s in window.transcript if s.text.strip()],
            "subtitles": [
                (c.text.replace("\n", " ").strip(), c.start)
                for c in window.subtitles
                if c.text.strip()
            ],
            "ocr": [(t.strip(), ocr_times.get(t)) for t in window.ocr if t.strip()],
        }

    @staticmethod
    def _frame_embeddings(window: FusedWindow) -> list[tuple[float | None, np.ndarray]]:
        frames: list[tuple[float | None, np.ndarray]] = [
            (item.time, item.embedding)
            for item in window.contents.of(Modality.VISUAL)
            if isinstance(item, FrameEncoding) and item.embedding.size
        ]
        if not frames and window.frame_mean is not None and window.frame_mean.size:
            frames = [(None, window.frame_mean)]
        return frames
