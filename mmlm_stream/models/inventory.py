"""What a model set contains and whether it works: behind ``models list`` and ``models verify``.

The CLI and the HTTP API both call these functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, modalities_of, resolve
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import SpeechInput
from mmlm_stream.util.errors import MmlmError


@dataclass(frozen=True)
class ModelRow:
    modality: Modality
    model: str
    weights: str
    size_mb: float | None
    licence: str
    device: str
    dtype: str
    enabled: bool


@dataclass(frozen=True)
class VerifyResult:
    modality: Modality
    model: str
    ok: bool
    load_s: float | None = None
    infer_ms: float | None = None
    detail: str = ""


def _enabled(modality: Modality, models: ModelsConfig) -> bool:
    config = getattr(models, modality.value)
    return bool(getattr(config, "enabled", True))


def list_models(models: ModelsConfig) -> list[ModelRow]:
    """The set's modalities with their model, weights, licence and placement (loads nothing)."""
    rows = []
    for modality in modalities_of(models.set):
        resolved = resolve(modality, models)
        if resolved is None:
            continue
        spec, ctx = resolved.spec, resolved.context
        rows.append(
            ModelRow(
                modality=modality,
                model=ctx.model or spec.name,
                weights=ctx.model or spec.weights,
                size_mb=spec.size_mb,
                licence=spec.licence,
                device=ctx.device,
                dtype=ctx.dtype,
                enabled=_enabled(modality, models),
            )
        )
    return rows


def _probe_frame() -> Frame:
    """A real photo (skimage's cat) at the decoder's default size."""
    from skimage import data, transform

    image = transform.resize(data.chelsea(), (256, 341), anti_aliasing=True)
    return Frame("verify", 0.0, (image * 255).astype(np.uint8))


def _probe_audio() -> np.ndarray:
    t = np.arange(16_000) / 16_000
    return (0.3 * np.sin(2 * np.pi * 1000 * t) * (t % 0.3 < 0.15)).astype(np.float32)


def _run_once(modality: Modality, encoder: Any) -> None:
    if modality is Modality.VISUAL:
        encoder.encode([_probe_frame()])
        encoder.score_queries([_probe_frame()], ["a cat"])
    elif modality is Modality.AUDIO:
        encoder.encode([AudioChunk("verify", 0.0, _probe_audio())])
    elif modality is Modality.SPEECH:
        encoder.transcribe([SpeechInput(0.0, _probe_audio())])
    elif modality is Modality.TEXT:
        encoder.embed(["a cat sits on a blanket"])
    elif modality is Modality.OCR:
        encoder.read([_probe_frame()])
    elif modality is Modality.OBJECTS:
        encoder.detect([_probe_frame()])


def verify_models(models: ModelsConfig) -> list[VerifyResult]:
    """Load every model of the set and run one inference; failures become one-line details."""
    results = []
    for row in list_models(models):
        started = time.perf_counter()
        try:
            encoder = load_encoder(row.modality, models)
            loaded = time.perf_counter()
            _run_once(row.modality, encoder)
            done = time.perf_counter()
        except (ModelUnavailable, MmlmError) as exc:
            results.append(VerifyResult(row.modality, row.model, False, detail=str(exc)))
            continue
        except Exception as exc:  # a broken model must not hide the state of the others
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(VerifyResult(row.modality, row.model, False, detail=reason))
            continue
        results.append(
            VerifyResult(
                row.modality,
                getattr(encoder, "model_id", row.model),
                True,
                load_s=loaded - started,
                infer_ms=(done - loaded) * 1000,
            )
        )
    return results
