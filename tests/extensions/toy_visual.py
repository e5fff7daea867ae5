"""A frame model in one file: names each frame "bright" or "dark" by its mean level.

The recipe of docs/architecture.md: a ``ModelSpec`` named ``SPEC`` whose loader returns an
object with the modality's protocol (``records.results.FrameEncoder``), plus one registry line
(``MODEL_SETS[set][Modality.VISUAL] = "extensions.toy_visual:SPEC"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmlm_stream.models.registry import LoadContext, ModelSpec
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.modality import Modality
from mmlm_stream.records.results import FrameEncoding, Label


class BrightnessEncoder:
    model_id = "toy/brightness"
    embedding_dim = 2

    def warmup(self) -> None:
        pass

    def encode(self, frames: Sequence[Frame]) -> list[FrameEncoding]:
        out = []
        for frame in frames:
            level = float(np.asarray(frame.image, np.float32).mean()) / 255.0
            embedding = np.array([level, 1.0 - level], np.float32)
            label = Label("bright" if level >= 0.5 else "dark", round(abs(level - 0.5) * 2, 3))
            out.append(FrameEncoding(frame.time, embedding, (label,)))
        return out

    def score_queries(self, frames: Sequence[Frame], texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(frames), len(texts)), np.float32)


def load(ctx: LoadContext) -> BrightnessEncoder:
    return BrightnessEncoder()


SPEC = ModelSpec(
    name="toy/brightness",
    modality=Modality.VISUAL,
    load=load,
    weights="none (computed)",
    licence="CC0",
    how_to_get="nothing to get",
)
