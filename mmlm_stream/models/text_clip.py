"""Hub text encoder: the text tower of the CLIP model the frames modality uses.

Queries and frames must share one space, so this loads the same checkpoint as ``visual_clip``
(through ``clip_common``, which keeps one copy per process when both modalities load).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mmlm_stream.models.clip_common import (
    DEFAULT_MODEL_ID,
    HUB_HOW_TO_GET,
    HUB_WEIGHTS,
    TINY_WEIGHTS,
    ClipBundle,
    load_clip,
)
from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.models.text_minilm import blank_rows
from mmlm_stream.records.modality import Modality

logger = logging.getLogger(__name__)


class ClipTextEncoder:
    """L2-normalised CLIP text features; text past the model's token limit (77) is cut.

    Empty or whitespace-only strings get the zero vector, as in ``text_minilm``: they carry no
    meaning and must never match anything.
    """

    def __init__(self, bundle: ClipBundle, *, batch_size: int) -> None:
        self.model_id = bundle.model_id
        self.embedding_dim = bundle.embed_dim
        self._bundle = bundle
        self._batch_size = batch_size

    def warmup(self) -> None:
        self.embed(["a person walks a dog", "fire"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        rows = np.flatnonzero(~blank_rows(texts))
        if len(rows):
            out[rows] = self._bundle.text_embeddings([texts[i] for i in rows], self._batch_size)
        return out


def _load(ctx: LoadContext, spec: ModelSpec) -> ClipTextEncoder:
    return ClipTextEncoder(load_clip(ctx, spec), batch_size=ctx.batch_size)


def load(ctx: LoadContext) -> ClipTextEncoder:
    return _load(ctx, SPEC)


def load_tiny(ctx: LoadContext) -> ClipTextEncoder:
    return _load(ctx, TINY)


SPEC = ModelSpec(
    name=DEFAULT_MODEL_ID,
    modality=Modality.TEXT,
    load=load,
    weights=HUB_WEIGHTS,
    licence="MIT",
    size_mb=605.0,
    how_to_get=HUB_HOW_TO_GET,
    follows=Modality.VISUAL,
)
TINY = ModelSpec(
    name="tiny-clip",
    modality=Modality.TEXT,
    load=load_tiny,
    weights=TINY_WEIGHTS,
    licence="n/a (random weights)",
    size_mb=0.3,
    how_to_get="built automatically; check that models.cache_dir is writable",
    follows=Modality.VISUAL,
)
