"""One Serve deployment class, deployed once per role (FrameEncoder, AudioEncoder, ...).

Callers send a source's mini-batch as one request; ``@serve.batch`` merges the requests of
all sources into one model call, then splits the results back. Inference runs in a worker
thread so the replica's event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray import serve

from mmlm_stream.config import ModelsConfig
from mmlm_stream.encoding import call_role
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.models.roles import Role
from mmlm_stream.threads import limit_threads

logger = logging.getLogger(__name__)

DEPLOYMENT_NAMES = {
    Role.FRAMES: "FrameEncoder",
    Role.AUDIO: "AudioEncoder",
    Role.SPEECH: "SpeechEncoder",
    Role.TEXT: "TextEncoder",
    Role.OCR: "OcrEncoder",
    Role.DETECTOR: "DetectorEncoder",
}


def _total(requests: list[list[Any]]) -> int:
    return sum(len(request) for request in requests)


def _split(results: Any, sizes: Sequence[int]) -> list[Any]:
    out, start = [], 0
    for size in sizes:
        out.append(results[start : start + size])
        start += size
    return out


@serve.deployment(max_ongoing_requests=32)
class RoleEncoder:
    def __init__(self, role: str, models: dict[str, Any]) -> None:
        limit_threads()
        self.role = Role(role)
        self.models = ModelsConfig.model_validate(models)
        self.encoder = load_encoder(self.role, self.models)
        if self.encoder is None:
            raise ValueError(f"model set '{self.models.set}' has no {role} model")
        self.max_batch_size = 16
        self.recent_batches: deque[int] = deque(maxlen=256)
        self.waiting = 0

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batch size and wait come from the Serve config's user_config."""
        self.max_batch_size = int(user_config.get("max_batch_size", self.max_batch_size))
        self._batched.set_max_batch_size(self.max_batch_size)
        if "batch_wait_timeout_s" in user_config:
            self._batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    def model_id(self) -> str:
        return self.encoder.model_id

    def node_id(self) -> str:
        """The Ray node this replica runs on (recorded in job summaries)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def stats(self) -> dict[str, Any]:
        """Recent model-call batch sizes and requests waiting now (for /metrics)."""
        batches, self.recent_batches = list(self.recent_batches), deque(maxlen=256)
        return {"batches": batches, "waiting": self.waiting}

    async def __call__(self, items: list[Any]) -> Any:
        """One caller's items; pieces larger than a batch are split, results concatenated."""
        size = self.max_batch_size
        pieces = [items[i : i + size] for i in range(0, len(items), size)]
        self.waiting += 1
        try:
            results = await asyncio.gather(*(self._batched(piece) for piece in pieces))
        finally:
            self.waiting -= 1
        if results and isinstance(results[0], np.ndarray):
            return np.concatenate(results) if len(results) > 1 else results[0]
        return [item for piece in results for item in piece]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05, batch_size_fn=_total)
    async def _batched(self, requests: list[list[Any]]) -> list[Any]:
        flat = [item for request in requests for item in request]
        self.recent_batches.append(len(flat))
        results = await asyncio.to_thread(call_role, self.encoder, self.role, flat)
        return _split(results, [len(request) for request in requests])
