"""Named model sets: which model fills each modality, where its weights come from, how it loads.

A model is one module under ``mmlm_stream.models`` exposing a ``ModelSpec``; a set maps each
modality to ``"module:ATTRIBUTE"``. Adding a model is that one file plus one line below. Modules
are imported only when their modality is loaded, so the default set never imports the hub stack.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmlm_stream.config.models import EncoderConfig, ModelsConfig
from mmlm_stream.models.device import resolve_device, resolve_dtype
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import ENCODER_PROTOCOLS, Encoder
from mmlm_stream.util.errors import ConfigError, MmlmError

logger = logging.getLogger(__name__)

MODEL_SETS: dict[str, dict[Modality, str]] = {
    "default": {
        Modality.VISUAL: "visual_efficientnet_tflite:SPEC",
        Modality.AUDIO: "audio_yamnet:SPEC",
        Modality.SPEECH: "speech_faster_whisper:SPEC",
        Modality.TEXT: "text_minilm:SPEC",
        Modality.OCR: "ocr_rapidocr:SPEC",
        Modality.OBJECTS: "objects_ssd_mobilenet:SPEC",
    },
    "hub": {
        Modality.VISUAL: "visual_clip:SPEC",
        Modality.AUDIO: "audio_clap:SPEC",
        Modality.SPEECH: "speech_whisper_hf:SPEC",
        Modality.TEXT: "text_clip:SPEC",
        Modality.OCR: "ocr_rapidocr:SPEC",
        Modality.OBJECTS: "objects_hf:SPEC",
    },
    "tiny": {
        Modality.VISUAL: "visual_clip:TINY",
        Modality.AUDIO: "audio_clap:TINY",
        Modality.SPEECH: "speech_whisper_hf:TINY",
        Modality.TEXT: "text_clip:TINY",
        Modality.OBJECTS: "objects_hf:TINY",
    },
}
REQUIRED_MODALITIES = (Modality.VISUAL, Modality.AUDIO, Modality.SPEECH, Modality.TEXT)


class ModelUnavailable(MmlmError):
    """A model's weights or code are missing; the message says how to get them."""


@dataclass(frozen=True)
class LoadContext:
    """Everything a loader needs, already resolved (device, dtype, paths)."""

    modality: Modality
    set_name: str
    model: str | None
    device: str
    dtype: str
    batch_size: int
    config: EncoderConfig
    cache_dir: Path
    allow_download: bool

    def cache_key(self) -> tuple[Any, ...]:
        """Two contexts with the same key load the same model the same way."""
        settings = self.config.model_dump_json()
        return (self.set_name, self.model, self.device, self.dtype, settings, str(self.cache_dir))

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def unavailable(self, spec: ModelSpec, reason: str) -> ModelUnavailable:
        """The one-line error for a missing model: modality, model, set, reason, remedy."""
        return ModelUnavailable(
            f"{self.modality.value} model '{self.model or spec.name}' of set '{self.set_name}': "
            f"{reason}; {spec.how_to_get}"
        )


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the model is and how to load it."""

    name: str
    modality: Modality
    load: Callable[[LoadContext], Encoder] = field(repr=False)
    weights: str
    licence: str
    size_mb: float | None = None
    how_to_get: str = ""
    follows: Modality | None = None
    """Use that modality's configured model when this modality has none (CLIP's text tower must
    come from the same checkpoint as its image tower, or queries land in another space)."""
    on_cuda: str | None = None
    """``"module:ATTRIBUTE"`` of the spec that fills this modality instead when it runs on CUDA
    (a CPU-only runtime's model gives way to its GPU counterpart)."""


@dataclass(frozen=True)
class Resolved:
    spec: ModelSpec
    context: LoadContext


_cache: dict[tuple[Any, ...], Encoder] = {}
_lock = threading.Lock()


def set_names() -> list[str]:
    return list(MODEL_SETS)


def modalities_of(set_name: str) -> list[Modality]:
    """The modalities a set fills; an unknown set is a one-line error listing the real ones."""
    if set_name not in MODEL_SETS:
        raise ConfigError(
            f"model set '{set_name}' does not exist (choose one of {', '.join(MODEL_SETS)})"
        )
    return list(MODEL_SETS[set_name])


def enabled_modalities(models: ModelsConfig) -> list[Modality]:
    """The modalities that run: the four every set fills, then OCR and the detector where the set
    has them and the config leaves them on. The one statement of this rule: the analysis,
    the Serve application and the Kubernetes rendering all ask here."""
    available = set(modalities_of(models.set))
    optional = [
        (Modality.OCR, models.ocr.enabled),
        (Modality.OBJECTS, models.objects.enabled),
    ]
    return [*REQUIRED_MODALITIES] + [
        modality for modality, on in optional if on and modality in available
    ]


def _spec(target: str) -> ModelSpec:
    """``"module:ATTRIBUTE"``: a module of this folder by its name, or any importable module
    by its dotted path, so a model in another package joins a set by one line."""
    module_name, attribute = target.split(":")
    if "." not in module_name:
        module_name = f"mmlm_stream.models.{module_name}"
    return getattr(importlib.import_module(module_name), attribute)


def spec_for(set_name: str, modality: Modality, device: str = "cpu") -> ModelSpec | None:
    """The spec filling ``modality`` in the set, on ``device`` (see ``ModelSpec.on_cuda``)."""
    if modality not in modalities_of(set_name):
        return None
    spec = _spec(MODEL_SETS[set_name][modality])
    if spec.on_cuda is not None and device.startswith("cuda"):
        return _spec(spec.on_cuda)
    return spec


def resolve(modality: Modality, models: ModelsConfig) -> Resolved | None:
    """The spec and load context of ``modality`` under ``models`` (None: not in this set)."""
    if modality not in modalities_of(models.set):
        return None
    role_config: EncoderConfig = getattr(models, modality.value)
    device = resolve_device(role_config.device or models.device)
    spec = spec_for(models.set, modality, device)
    assert spec is not None
    model = role_config.model
    if model is None and spec.follows is not None:
        model = getattr(models, spec.follows.value).model
    context = LoadContext(
        modality=modality,
        set_name=models.set,
        model=model,
        device=device,
        dtype=resolve_dtype(role_config.dtype or models.dtype, device),
        batch_size=role_config.batch_size,
        config=role_config,
        cache_dir=Path(models.cache_dir).expanduser(),
        allow_download=models.allow_download,
    )
    return Resolved(spec, context)


def load_encoder(modality: Modality, models: ModelsConfig) -> Encoder | None:
    """Load (once per process) and warm up the encoder of ``modality``; None if the set has none.

    The lock is not re-entrant: a loader must never call ``load_encoder`` itself. Loads are
    serial on purpose: transformers' lazy imports break when two threads import at once.
    """
    resolved = resolve(modality, models)
    if resolved is None:
        return None
    spec, context = resolved.spec, resolved.context
    key = (spec.modality, spec.name, *context.cache_key())
    with _lock:
        encoder = _cache.get(key)
        if encoder is not None:
            return encoder
        started = time.perf_counter()
        encoder = spec.load(context)
        protocol = ENCODER_PROTOCOLS[modality]
        if not isinstance(encoder, protocol):
            raise TypeError(f"{spec.name} does not implement {protocol.__name__}")
        encoder.warmup()
        logger.info(
            "loaded %s model %s on %s in %.1fs",
            modality.value,
            encoder.model_id,
            context.device,
            time.perf_counter() - started,
        )
        _cache[key] = encoder
        return encoder
