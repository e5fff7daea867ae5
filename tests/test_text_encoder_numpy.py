"""The torch-free CPU text path: numpy BERT against torch, and no torch import in production."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models import text_minilm
from mmlm_stream.models.bert_numpy import NumpyBert, erf
from mmlm_stream.models.registry import LoadContext, resolve
from mmlm_stream.records.modality import Modality

LONG = " ".join(f"token{i} and some more words" for i in range(120))
TEXTS = [
    "a cat on a sofa",
    "",
    "fire",
    "  \n\t",
    "Someone is cooking dinner in a small kitchen while the radio plays.",
    "ñandú 🐦 Ünïcödé naïve café 漢字 テスト Привет мир",
    LONG,
    "x",
    "🔥🔥🔥 alarm!!!",
    "The quick brown fox jumps over the lazy dog. " * 40,
]


@pytest.fixture(scope="module")
def text_context(default_models: ModelsConfig) -> LoadContext:
    resolved = resolve(Modality.TEXT, default_models)
    assert resolved is not None
    return resolved.context


@pytest.fixture(scope="module")
def numpy_minilm(text_context: LoadContext) -> text_minilm.MiniLMTextEncoder:
    return text_minilm.load_numpy(text_context, text_minilm.package_model_dir())


def test_erf_matches_math_erf_to_float32_precision() -> None:
    grid = np.linspace(-7.0, 7.0, 20001, dtype=np.float32)
    exact = np.array([math.erf(float(v)) for v in grid])
    assert np.abs(erf(grid) - exact).max() < 1e-6


@pytest.mark.slow
def test_numpy_bert_matches_torch_bert_on_ragged_sequences(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=120,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=40,
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    masked_lm = transformers.BertForMaskedLM(config).eval()
    masked_lm.save_pretrained(tmp_path)  # weights named "bert.*" next to the MLM head
    bert = NumpyBert.from_folder(tmp_path)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 120, size=n).tolist() for n in (1, 7, 40, 3)]
    ours = bert.hidden_states(sequences)
    with torch.inference_mode():
        for ids, state in zip(sequences, ours, strict=True):
            theirs = masked_lm.bert(torch.tensor([ids])).last_hidden_state[0].numpy()
            np.testing.assert_allclose(state, theirs, atol=2e-5)


@pytest.mark.models
@pytest.mark.slow
def test_numpy_minilm_matches_torch_minilm(
    numpy_minilm: text_minilm.MiniLMTextEncoder, text_context: LoadContext
) -> None:
    torch_minilm = text_minilm.load_torch(text_context, text_minilm.package_model_dir())
    ours, theirs = numpy_minilm.embed(TEXTS), torch_minilm.embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    blank = text_minilm.blank_rows(TEXTS)
    assert (ours[blank] == 0).all() and (theirs[blank] == 0).all()
    cosines = np.sum(ours[~blank] * theirs[~blank], axis=1)
    assert cosines.min() >= 0.99999
    assert (numpy_minilm.model_id, numpy_minilm.embedding_dim) == (
        torch_minilm.model_id,
        torch_minilm.embedding_dim,
    )


@pytest.mark.models
def test_numpy_minilm_truncates_at_max_seq_length(
    numpy_minilm: text_minilm.MiniLMTextEncoder,
) -> None:
    head = "word " * 300  # > 256 tokens: whatever follows is cut off
    cut, longer = numpy_minilm.embed([head, head + "a completely different ending about cars"])
    np.testing.assert_allclose(cut, longer, atol=1e-6)
    short, extended = numpy_minilm.embed(["word " * 10, "word " * 10 + "about cars"])
    assert float(short @ extended) < 0.99


def test_numpy_path_only_for_a_local_bert_folder_on_cpu_in_float32(
    text_context: LoadContext, tmp_path: Path
) -> None:
    package = text_minilm.package_model_dir()
    assert text_minilm.numpy_problem(text_context, package) is None
    on_cuda = dataclasses.replace(text_context, device="cuda")
    assert text_minilm.numpy_problem(on_cuda, package) == "device cuda"
    half = dataclasses.replace(text_context, dtype="bfloat16")
    assert text_minilm.numpy_problem(half, package) == "dtype bfloat16"
    hub_id = "sentence-transformers/all-MiniLM-L12-v2"
    assert text_minilm.numpy_problem(text_context, hub_id) == "not a local folder"
    for name in ("tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert "roberta" in str(text_minilm.numpy_problem(text_context, tmp_path))


@pytest.mark.models
@pytest.mark.slow
def test_default_text_model_on_cpu_never_imports_torch(tmp_path: Path) -> None:
    script = f"""
import sys
from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.records.modality import Modality
models = ModelsConfig(set="default", device="cpu", cache_dir={str(tmp_path)!r})
encoder = load_encoder(Modality.TEXT, models)
assert encoder.embed(["a dog barks", ""]).shape == (2, 384)
print(type(encoder.model).__name__, "torch" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["NumpySentenceModel", "False"]
