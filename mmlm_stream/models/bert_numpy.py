"""A BERT encoder's forward pass in numpy, so CPU text embeddings need no torch.

On a CPU-only machine the default text model (all-MiniLM-L6-v2: 6 layers, 384 wide) was the
Encoders replica's only torch user, and importing torch costs a process ~400 MB PSS. The
inference pass is a few matrix products per layer, which numpy's BLAS runs about as fast.

Sequences are packed, never padded: the per-token layers (projections, LayerNorm, the
feed-forward block) run once over all real tokens of the batch, and attention runs per
sequence on its own slice, so no attention mask is needed and padding costs nothing. Inputs are
single segments (token type 0), as sentence embeddings use them. Only the shape this module
implements is accepted (``folder_problem`` says why a checkpoint is not): absolute position
embeddings, exact (erf) GELU, post-LayerNorm, float32 safetensors.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_PREFIX = "bert."
"""Checkpoints saved from a task model (``BertForMaskedLM`` ...) nest the encoder under this."""

# Rational approximation of erf on [-4, 4] (Eigen's float erf; within 4e-7 of the exact value
# in float32, 1 beyond), so GELU keeps the erf form without importing scipy (~20 MB PSS).
_ERF_ALPHA = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_BETA = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_SQRT_HALF = np.float32(1 / math.sqrt(2))
_GELU_BLOCK = 1 << 15
"""Elements per GELU block (128 KB of float32: a few live temporaries fit in L2)."""
_FFN_TOKENS = 1024
"""Tokens per feed-forward chunk: bounds the (tokens, intermediate) activation to ~6 MB."""


class UnsupportedBert(ValueError):
    """The checkpoint is not the BERT shape this module implements."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the forward pass depends on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    max_positions: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UnsupportedBert(f"cannot read {path.name}: {error}") from error
        if raw.get("model_type") != "bert":
            raise UnsupportedBert(f"model_type is {raw.get('model_type')!r}, not 'bert'")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedBert(f"hidden_act {raw['hidden_act']!r} is not the erf GELU")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedBert(f"{raw['position_embedding_type']} position embeddings")
        if raw.get("is_decoder") or raw.get("add_cross_attention"):
            raise UnsupportedBert("a decoder, not an encoder")
        try:
            config = cls(
                hidden_size=int(raw["hidden_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=int(raw["num_attention_heads"]),
                max_positions=int(raw["max_position_embeddings"]),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UnsupportedBert(f"{path.name} lacks {error}") from error
        if config.hidden_size % config.num_heads:
            raise UnsupportedBert("hidden_size is not a multiple of num_attention_heads")
        return config


def folder_problem(folder: Path) -> str | None:
    """Why ``NumpyBert.from_folder`` cannot load ``folder`` (None: it can)."""
    if not (folder / WEIGHTS_FILE).is_file():
        return f"no {WEIGHTS_FILE}"
    try:
        BertConfig.from_file(folder / CONFIG_FILE)
    except UnsupportedBert as error:
        return str(error)
    return None


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf (Horner's scheme, updating its temporaries in place)."""
    z = np.clip(x, -4.0, 4.0).astype(np.float32, copy=False)
    z2 = z * z
    p = z2 * np.float32(_ERF_ALPHA[0])
    p += np.float32(_ERF_ALPHA[1])
    for alpha in _ERF_ALPHA[2:]:
        p *= z2
        p += np.float32(alpha)
    q = z2 * np.float32(_ERF_BETA[0])
    q += np.float32(_ERF_BETA[1])
    for beta in _ERF_BETA[2:]:
        q *= z2
        q += np.float32(beta)
    p *= z
    p /= q
    return p


def gelu_(x: np.ndarray) -> np.ndarray:
    """``x * Phi(x)`` in place, the erf form BERT's ``hidden_act: gelu`` means.

    Computed in blocks that stay in the CPU cache: over the whole (tokens, 1536) array at once,
    the ~25 elementwise passes made GELU cost more than the layer's matrix products.
    """
    flat = x.reshape(-1)
    for start in range(0, flat.size, _GELU_BLOCK):
        block = flat[start : start + _GELU_BLOCK]
        phi = erf(block * _SQRT_HALF)
        phi += np.float32(1.0)
        phi *= np.float32(0.5)
        block *= phi
    return x


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + np.float32(eps)) * weight + bias


@dataclass(frozen=True)
class _Layer:
    qkv_weight: np.ndarray
    """(3 * hidden, hidden): query, key and value projections in one product."""
    qkv_bias: np.ndarray
    out_weight: np.ndarray
    out_bias: np.ndarray
    attention_norm: tuple[np.ndarray, np.ndarray]
    up_weight: np.ndarray
    up_bias: np.ndarray
    down_weight: np.ndarray
    down_bias: np.ndarray
    output_norm: tuple[np.ndarray, np.ndarray]


class NumpyBert:
    """The encoder stack of a ``BertModel``: token ids in, last hidden states out."""

    def __init__(self, config: BertConfig, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        weights = {
            name.removeprefix(_PREFIX): np.asarray(w, np.float32)
            for name, w in weights.items()
            if w.dtype.kind == "f"
        }

        def get(name: str) -> np.ndarray:
            try:
                return weights[name]
            except KeyError:
                raise UnsupportedBert(f"weights lack {name}") from None

        def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
            """torch's (out, in) layout, used as ``x @ weight.T`` (BLAS reads it transposed,
            as fast as a transposed copy, which would only hold more memory)."""
            return get(f"{name}.weight"), get(f"{name}.bias")

        def norm(name: str) -> tuple[np.ndarray, np.ndarray]:
            return get(f"{name}.LayerNorm.weight"), get(f"{name}.LayerNorm.bias")

        self._words = get("embeddings.word_embeddings.weight")
        self._positions = get("embeddings.position_embeddings.weight")
        self._type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._embedding_norm = norm("embeddings")
        self._layers = []
        for index in range(config.num_layers):
            prefix = f"encoder.layer.{index}"
            parts = [linear(f"{prefix}.attention.self.{n}") for n in ("query", "key", "value")]
            out_weight, out_bias = linear(f"{prefix}.attention.output.dense")
            up_weight, up_bias = linear(f"{prefix}.intermediate.dense")
            down_weight, down_bias = linear(f"{prefix}.output.dense")
            self._layers.append(
                _Layer(
                    qkv_weight=np.concatenate([w for w, _ in parts]),
                    qkv_bias=np.concatenate([b for _, b in parts]),
                    out_weight=out_weight,
                    out_bias=out_bias,
                    attention_norm=norm(f"{prefix}.attention.output"),
                    up_weight=up_weight,
                    up_bias=up_bias,
                    down_weight=down_weight,
                    down_bias=down_bias,
                    output_norm=norm(f"{prefix}.output"),
                )
            )
        if self._words.shape[1] != config.hidden_size:
            raise UnsupportedBert("word embeddings do not match hidden_size")

    @classmethod
    def from_folder(cls, folder: Path) -> NumpyBert:
        """Load ``config.json`` and ``model.safetensors`` (``UnsupportedBert`` if unsuitable)."""
        from safetensors.numpy import load_file

        config = BertConfig.from_file(folder / CONFIG_FILE)
        try:
            weights = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, ValueError) as error:
            raise UnsupportedBert(f"cannot read {WEIGHTS_FILE}: {error}") from error
        return cls(config, weights)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def hidden_states(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Each sequence's last hidden states, (its length, hidden) float32."""
        lengths = [len(ids) for ids in sequences]
        if not lengths:
            return []
        if min(lengths) < 1 or max(lengths) > self.config.max_positions:
            raise ValueError(f"sequence lengths must be 1..{self.config.max_positions}")
        ids = np.concatenate([np.asarray(s, np.int64) for s in sequences])
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = self._words[ids] + self._positions[positions] + self._type0
        x = layer_norm(x, *self._embedding_norm, self.config.layer_norm_eps)
        bounds = np.cumsum([0, *lengths])
        for layer in self._layers:
            x = self._layer(layer, x, bounds)
        return [x[start:end] for start, end in itertools.pairwise(bounds.tolist())]

    def _layer(self, layer: _Layer, x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        eps = self.config.layer_norm_eps
        context = self._attention(x @ layer.qkv_weight.T + layer.qkv_bias, bounds)
        x = layer_norm(
            context @ layer.out_weight.T + layer.out_bias + x, *layer.attention_norm, eps
        )
        out = np.empty_like(x)
        for start in range(0, x.shape[0], _FFN_TOKENS):
            part = x[start : start + _FFN_TOKENS]
            inner = part @ layer.up_weight.T
            inner += layer.up_bias
            down = gelu_(inner) @ layer.down_weight.T
            down += layer.down_bias
            down += part
            out[start : start + _FFN_TOKENS] = layer_norm(down, *layer.output_norm, eps)
        return out

    def _attention(self, qkv: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Self-attention of each packed sequence over itself: (tokens, hidden)."""
        heads = self.config.num_heads
        width = self.config.hidden_size // heads
        scale = np.float32(1 / math.sqrt(width))
        out = np.empty((qkv.shape[0], self.config.hidden_size), np.float32)
        for start, end in itertools.pairwise(bounds.tolist()):
            # (3, heads, length, width) for this sequence's tokens
            q, k, v = qkv[start:end].reshape(end - start, 3, heads, width).transpose(1, 2, 0, 3)
            scores = (q * scale) @ k.transpose(0, 2, 1)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            out[start:end] = (scores @ v).transpose(1, 0, 2).reshape(end - start, -1)
        return out
