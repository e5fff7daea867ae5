"""What a model set contains and whether it works: behind ``models list`` and ``models verify``.

The CLI and the HTTP API both call these functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import ModelUnavailable, load_encoder, resolve, roles_of
from mmlm_stream.records.channels import AudioChunk, Frame
from mmlm_stream.records.results import Role, SpeechInput
from mmlm_stream.util.errors import MmlmError


@dataclass(frozen=True)
class ModelRow:
    role: Role
    model: str
    weights: str
    size_mb: float | None
    licence: str
    device: str
    dtype: str
    enabled: bool


@dataclass(frozen=True)
class VerifyResult:
    role: Role
    model: str
    ok: bool
    load_s: float | None = None
    infer_ms: float | None = None
    detail: str = ""


def _enabled(role: Role, models: ModelsConfig) -> bool:
    config = getattr(models, role.value)
    return bool(getattr(config, "enabled", True))


def list_models(models: ModelsConfig) -> list[ModelRow]:
    """The set's roles with their model, weight source, licence and placement (loads nothing)."""
    rows = []
    for role in roles_of(models.set):
        resolved = resolve(role, models)
        if resolved is None:
            continue
        spec, ctx = resolved.spec, resolved.context
        rows.append(
            ModelRow(
                role=role,
                model=ctx.model or spec.name,
                weights=ctx.model or spec.weights,
                size_mb=spec.size_mb,
                licence=spec.licence,
                device=ctx.device,
                dtype=ctx.dtype,
                enabled=_enabled(role, models),
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


def _run_once(role: Role, encoder: Any) -> None:
    if role is Role.FRAMES:
        encoder.encode([_probe_frame()])
        encoder.score_queries([_probe_frame()], ["a cat"])
    elif role is Role.AUDIO:
        encoder.encode([AudioChunk("verify", 0.0, _probe_audio())])
    elif role is Role.SPEECH:
        encoder.transcribe([SpeechInput(0.0, _probe_audio())])
    elif role is Role.TEXT:
        encoder.embed(["a cat sits on a blanket"])
    elif role is Role.OCR:
        encoder.read([_probe_frame()])
    elif role is Role.DETECTOR:
        encoder.detect([_probe_frame()])


def verify_models(models: ModelsConfig) -> list[VerifyResult]:
    """Load every model of the set and run one inference; failures become one-line details."""
    results = []
    for row in list_models(models):
        started = time.perf_counter()
        try:
            encoder = load_encoder(row.role, models)
            loaded = time.perf_counter()
            _run_once(row.role, encoder)
            done = time.perf_counter()
        except (ModelUnavailable, MmlmError) as exc:
            results.append(VerifyResult(row.role, row.model, False, detail=str(exc)))
            continue
        except Exception as exc:  # a broken model must not hide the state of the others
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(VerifyResult(row.role, row.model, False, detail=reason))
            continue
        results.append(
            VerifyResult(
                row.role,
                getattr(encoder, "model_id", row.model),
                True,
                load_s=loaded - started,
                infer_ms=(done - loaded) * 1000,
            )
        )
    return results
