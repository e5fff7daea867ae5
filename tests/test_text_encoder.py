"""Text encoders: all-MiniLM-L6-v2 (default set), the tiny CLIP text tower, hub errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmlm_stream.config.models import ModelsConfig, TextModelConfig
from mmlm_stream.models.registry import ModelUnavailable, load_encoder
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoder, TextEncoder


@pytest.fixture(scope="module")
def minilm(default_models: ModelsConfig) -> TextEncoder:
    encoder = load_encoder(Modality.TEXT, default_models)
    assert isinstance(encoder, TextEncoder)
    return encoder


@pytest.fixture(scope="module")
def tiny_text(tiny_models: ModelsConfig) -> TextEncoder:
    encoder = load_encoder(Modality.TEXT, tiny_models)
    assert isinstance(encoder, TextEncoder)
    return encoder


def assert_unit_rows(vectors: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.models
@pytest.mark.slow
def test_minilm_embeds_unit_float32_rows_of_384(minilm: TextEncoder) -> None:
    vectors = minilm.embed(["a cat on a sofa", "Someone is cooking dinner.", "ñandú 🐦"])
    assert vectors.shape == (3, 384) == (3, minilm.embedding_dim)
    assert vectors.dtype == np.float32
    assert_unit_rows(vectors)


@pytest.mark.models
@pytest.mark.slow
def test_minilm_puts_paraphrases_closer_than_unrelated_text(minilm: TextEncoder) -> None:
    cat, kitten, stock = minilm.embed(
        ["a cat sleeping on the couch", "a kitten naps on a sofa", "stock prices fell sharply"]
    )
    assert float(cat @ kitten) > float(cat @ stock) + 0.3


@pytest.mark.models
@pytest.mark.slow
def test_minilm_empty_batch_and_blank_strings(minilm: TextEncoder) -> None:
    assert minilm.embed([]).shape == (0, 384)
    vectors = minilm.embed(["", "  \n", "fire"])
    assert (vectors[:2] == 0).all()  # blank text has no meaning: the zero vector
    assert_unit_rows(vectors[2:])


@pytest.mark.models
@pytest.mark.slow
def test_minilm_batches_and_truncation_do_not_change_results(minilm: TextEncoder) -> None:
    texts = [f"message number {i} about a {'red ' * i}car" for i in range(40)]
    together = minilm.embed(texts)
    alone = np.concatenate([minilm.embed([text]) for text in texts[:3]])
    np.testing.assert_allclose(together[:3], alone, atol=1e-4)
    long = minilm.embed(["word " * 5000])
    assert long.shape == (1, 384) and np.isfinite(long).all()


def test_minilm_bad_model_override_is_model_unavailable(tmp_path: Path) -> None:
    models = ModelsConfig(
        set="default",
        device="cpu",
        cache_dir=tmp_path,
        text=TextModelConfig(model=str(tmp_path / "no-such-model")),
    )
    with pytest.raises(ModelUnavailable, match="no-such-model") as caught:
        load_encoder(Modality.TEXT, models)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_tiny_clip_text_loads_via_registry_and_shares_the_frames_model(
    tiny_text: TextEncoder, tiny_models: ModelsConfig
) -> None:
    frames = load_encoder(Modality.VISUAL, tiny_models)
    assert isinstance(frames, FrameEncoder)
    assert tiny_text.embedding_dim == frames.embedding_dim
    assert tiny_text._bundle is frames._bundle  # type: ignore[attr-defined]
    vectors = tiny_text.embed(["a cat", "", "x" * 2000])
    assert vectors.shape == (3, tiny_text.embedding_dim) and vectors.dtype == np.float32
    assert (vectors[1] == 0).all()
    assert_unit_rows(vectors[[0, 2]])
    assert tiny_text.embed([]).shape == (0, tiny_text.embedding_dim)


def test_hub_text_without_weights_is_one_line_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        load_encoder(Modality.TEXT, ModelsConfig(set="hub", device="cpu", cache_dir=tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("text model 'openai/clip-vit-base-patch32' of set 'hub'")
    assert "hf download" in message
