"""CLIP / SigLIP loading shared by the hub and tiny frame and text modalities.

Frames and text must live in one embedding space, so both modalities load the same checkpoint and,
within a process, share one loaded copy (``load_clip`` caches by source, device and dtype).
The tiny set builds a random CLIP from a config, saves it with ``save_pretrained`` and loads it
back through exactly the ``from_pretrained`` path the hub set uses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.util.atomic_folder import build_folder

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "openai/clip-vit-base-patch32"
TINY_SUBDIR = ("tiny", "clip")
TINY_SEED = 0
HUB_HOW_TO_GET = (
    "on a machine with network run `hf download openai/clip-vit-base-patch32` (or the id you "
    "configured) and copy the HF cache, or set models.allow_download: true, or point the "
    "modality's `model` at a local folder"
)
HUB_WEIGHTS = "Hugging Face hub / local HF cache (openai/clip-vit-base-patch32, ~605 MB)"
TINY_WEIGHTS = "random, built from a config into <cache_dir>/tiny/clip"

CLIP_COSINE_CENTRE = 0.23
CLIP_COSINE_SLOPE = 50.0
"""CLIP has no trained bias that turns a cosine into a probability, so ``query_scores`` uses
``sigmoid((cos - 0.23) * 50)``. For CLIP ViT-B/32 a matching image and short text usually have
cosine ~0.28-0.33 (score 0.92-0.99) and unrelated ones ~0.12-0.20 (score <0.2). Taken from
published CLIP score statistics, not measured here (no CLIP weights on this machine)."""


@dataclass(frozen=True)
class ClipBundle:
    """A loaded CLIP-style model (CLIP or SigLIP) with its tokenizer and image processor."""

    model: Any
    tokenizer: Any
    image_processor: Any
    model_id: str
    source: str
    device: str
    dtype: Any
    embed_dim: int
    max_text_tokens: int
    sigmoid_loss: bool
    """SigLIP: trained with a sigmoid, so ``logit_scale * cos + logit_bias`` is calibrated."""

    def image_embeddings(self, images: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
        """L2-normalised image features (n, embed_dim) of RGB uint8 images."""
        import torch

        out = np.zeros((len(images), self.embed_dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                part = [centre_square(image) for image in images[start : start + batch_size]]
                pixels = self.image_processor(
                    images=part, return_tensors="pt", input_data_format="channels_last"
                )["pixel_values"]
                features = _pooled(
                    self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
                )
                normed = torch.nn.functional.normalize(features.float(), dim=-1)
                out[start : start + len(part)] = normed.cpu().numpy()
        return out

    def text_embeddings(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """L2-normalised text features (n, embed_dim); text past the model's limit is cut."""
        import torch

        out = np.zeros((len(texts), self.embed_dim), np.float32)
        padding: bool | str = "max_length" if self.sigmoid_loss else True
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                part = list(texts[start : start + batch_size])
                inputs = self.tokenizer(
                    part,
                    padding=padding,
                    truncation=True,
                    max_length=self.max_text_tokens,
                    return_tensors="pt",
                ).to(self.device)
                accepted = {"input_ids", "attention_mask", "position_ids"}
                kwargs = {key: value for key, value in inputs.items() if key in accepted}
                features = _pooled(self.model.get_text_features(**kwargs))
                normed = torch.nn.functional.normalize(features.float(), dim=-1)
                out[start : start + len(part)] = normed.cpu().numpy()
        return out

    def label_logits(self, cosine: np.ndarray) -> np.ndarray:
        """The model's own logit scale applied to cosines (for softmax over a vocabulary)."""
        return cosine * float(self.model.logit_scale.detach().float().exp().cpu())

    def query_scores(self, cosine: np.ndarray) -> np.ndarray:
        """Cosines between frames and free-text queries as scores in [0, 1].

        SigLIP: the model's own sigmoid (``logit_scale * cos + logit_bias``), the probability
        it was trained to give that the text describes the image. CLIP: a fixed sigmoid around
        typical matching/unrelated cosines (see ``CLIP_COSINE_CENTRE``).
        """
        if self.sigmoid_loss:
            bias = float(self.model.logit_bias.detach().float().cpu())
            logits = self.label_logits(cosine) + bias
        else:
            logits = (cosine - CLIP_COSINE_CENTRE) * CLIP_COSINE_SLOPE
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _pooled(output: Any) -> Any:
    """transformers 5 returns an output object (embedding in ``pooler_output``); 4 a tensor."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


def centre_square(image: np.ndarray) -> np.ndarray:
    """The centred square of an RGB uint8 image: what CLIP's resize + centre-crop keeps anyway.

    Cropping first keeps very thin frames from being resized into huge images. (SigLIP resizes
    without cropping; for it this crops instead of squashing.)
    """
    from mmlm_stream.models.visual_efficientnet import rgb_image

    rgb = rgb_image(image)
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-to-character table: every byte gets a printable character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def tiny_clip_dir(cache_dir: Path) -> Path:
    return cache_dir.joinpath(*TINY_SUBDIR)


def ensure_tiny_clip(folder: Path) -> bool:
    """Build and save a tiny random CLIP at ``folder`` unless one is there; True if built.

    Deterministic (fixed seed, global RNG untouched) and atomic: written to a sibling temporary
    folder and renamed, so a crash or a concurrent builder never leaves a half-written model.
    The tokenizer is a byte-level BPE with no merges (every byte, alone or word-final, plus the
    two special tokens): it tokenises any text offline, which is all the tiny set needs.
    """
    if (folder / "config.json").is_file():
        return False
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = [*chars, *(char + "</w>" for char in chars), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CLIPModel(config)

    def fill(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        image_processor.save_pretrained(staging)

    if not build_folder(folder, fill, complete=lambda built: (built / "config.json").is_file()):
        return False  # another process finished first
    logger.info("built tiny random CLIP at %s", folder)
    return True


_bundles: dict[tuple[str, str, str], ClipBundle] = {}
_lock = threading.Lock()


def model_source(ctx: LoadContext) -> str:
    """What ``from_pretrained`` gets: the override, else the tiny folder (built if missing) or
    the default id."""
    if ctx.model:
        local = Path(ctx.model).expanduser()
        return str(local) if local.exists() else ctx.model
    if ctx.set_name == "tiny":
        folder = tiny_clip_dir(ctx.cache_dir)
        ensure_tiny_clip(folder)
        return str(folder)
    return DEFAULT_MODEL_ID


def load_clip(ctx: LoadContext, spec: ModelSpec) -> ClipBundle:
    """The CLIP-style model of ``ctx`` (one copy per source, device and dtype in a process)."""
    try:
        import torch  # noqa: F401
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError as error:
        reason = f"package missing ({error.name}); pip install transformers"
        raise ctx.unavailable(spec, reason) from error
    source = model_source(ctx)
    key = (source, ctx.device, ctx.dtype)
    with _lock:
        bundle = _bundles.get(key)
        if bundle is not None:
            return bundle
        local_only = not ctx.allow_download
        try:
            model = AutoModel.from_pretrained(
                source, local_files_only=local_only, dtype=ctx.torch_dtype()
            )
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            image_processor = AutoImageProcessor.from_pretrained(
                source, local_files_only=local_only
            )
        except (OSError, ValueError) as error:
            raise ctx.unavailable(spec, _load_failure(source, local_only, error)) from error
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise ctx.unavailable(spec, f"'{source}' is not a CLIP-style image-text model")
        model = model.to(ctx.device).eval()
        text_config = model.config.text_config
        bundle = ClipBundle(
            model=model,
            tokenizer=tokenizer,
            image_processor=image_processor,
            model_id=ctx.model or (DEFAULT_MODEL_ID if ctx.set_name != "tiny" else "tiny-clip"),
            source=source,
            device=ctx.device,
            dtype=ctx.torch_dtype(),
            embed_dim=_embed_dim(model),
            max_text_tokens=int(getattr(text_config, "max_position_embeddings", 77)),
            sigmoid_loss=hasattr(model, "logit_bias"),
        )
        _bundles[key] = bundle
        return bundle


def _load_failure(source: str, local_only: bool, error: Exception) -> str:
    """One line on why ``from_pretrained`` failed, without transformers' multi-line advice."""
    if local_only and not Path(source).exists():
        from huggingface_hub.constants import HF_HUB_CACHE

        return f"'{source}' is not in the local Hugging Face cache ({HF_HUB_CACHE})"
    text = str(error).strip()
    detail = text.splitlines()[0][:200] if text else type(error).__name__
    return f"cannot load '{source}': {detail}"


def _embed_dim(model: Any) -> int:
    config = model.config
    projection = getattr(config, "projection_dim", None)
    if projection:
        return int(projection)
    return int(config.vision_config.hidden_size)  # SigLIP: no projection, pooled hidden state
