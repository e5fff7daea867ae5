"""The encoder deployment class: one replica runs the models of one modality, or of several.

GPU configs deploy it once per modality (FrameEncoder, AudioEncoder, ...), each scaling on its
own queue. Without a GPU, a Serve config that lists ``Encoders`` gets one deployment hosting
every encoder modality that has no deployment of its own: one process holds the libraries
(torch, onnxruntime, LiteRT, CTranslate2) once instead of once per modality, which is most of a
laptop's memory (measured in ``benchmarks/batch_speed.py``). Callers name the modality of every
call (``handle.remote(items, modality=...)``), so the same code talks to either layout.

Callers send a source's mini-batch as one request; each modality's ``serve.batch`` merges the
requests of all sources into one model call, then splits the results back. Inference runs in
a worker thread so the replica's event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from ray import serve

from mmlm_stream.config.models import ModelsConfig
from mmlm_stream.models.registry import load_encoder
from mmlm_stream.pipeline.batch_wait import BatchWait
from mmlm_stream.pipeline.encoding import call_role_per_request
from mmlm_stream.records.modality import LEGACY, Modality
from mmlm_stream.records.results import Encoder
from mmlm_stream.util.memory import IdleTrimmer
from mmlm_stream.util.threads import limit_threads

logger = logging.getLogger(__name__)

DEPLOYMENT_NAMES = {
    Modality.VISUAL: "VisualEncoder",
    Modality.AUDIO: "AudioEncoder",
    Modality.SPEECH: "SpeechEncoder",
    Modality.TEXT: "TextEncoder",
    Modality.OCR: "OcrEncoder",
    Modality.OBJECTS: "ObjectsEncoder",
}
SHARED_DEPLOYMENT = "Encoders"
"""The deployment hosting every encoder modality the Serve config gives no deployment of its own."""
DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_S = 0.05
_BATCH_KEYS = ("max_batch_size", "batch_wait_timeout_s", "busy_batch_wait_timeout_s")


def _total(requests: list[list[Any]]) -> int:
    return sum(len(request) for request in requests)


def load_encoders(modalities: Sequence[Modality], models: ModelsConfig) -> dict[Modality, Encoder]:
    """Every modality's model, one after the other: in parallel threads transformers' lazy
    imports race (the tiny and hub sets fail to import), and on 2 cores parallel loading of
    the default set measured 6.4 s against 7.1 s serially, not worth that risk."""
    encoders = {}
    for modality in modalities:
        encoder = load_encoder(modality, models)
        if encoder is None:
            raise ValueError(f"model set '{models.set}' has no {modality.value} model")
        encoders[modality] = encoder
    return encoders


def modality_batch_options(user_config: dict[str, Any], modality: Modality) -> dict[str, Any]:
    """A modality's batch options from a user_config: flat (one modality) or keyed by name."""
    nested = user_config.get(modality.value)
    if nested is None:
        old = next((name for name, new in LEGACY.items() if new is modality), None)
        nested = user_config.get(old) if old else None
    source = nested if isinstance(nested, dict) else user_config
    return {key: source[key] for key in _BATCH_KEYS if key in source}


class _ModalityQueue:
    """One modality's Serve batcher and the counters behind ``stats``."""

    def __init__(self, modality: Modality, encoder: Encoder, trimmer: IdleTrimmer) -> None:
        self.modality = modality
        self.encoder = encoder
        self.trimmer = trimmer
        self.max_batch_size = DEFAULT_MAX_BATCH
        self.recent_batches: deque[int] = deque(maxlen=256)
        self.waiting = 0
        self.wait = BatchWait(DEFAULT_BATCH_WAIT_S)
        self._wait_now = DEFAULT_BATCH_WAIT_S
        self.batched: Callable[[list[Any]], Coroutine[Any, Any, Any]] = serve.batch(
            max_batch_size=DEFAULT_MAX_BATCH,
            batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S,
            batch_size_fn=_total,
        )(self._run)

    def configure(self, options: dict[str, Any]) -> None:
        if "max_batch_size" in options:
            self.max_batch_size = int(options["max_batch_size"])
            self.batched.set_max_batch_size(self.max_batch_size)  # type: ignore[attr-defined]
        if "batch_wait_timeout_s" in options:
            self.wait.quiet_s = float(options["batch_wait_timeout_s"])
            self._set_wait(self.wait.quiet_s)
        if "busy_batch_wait_timeout_s" in options:
            self.wait.busy_s = float(options["busy_batch_wait_timeout_s"])

    def _set_wait(self, wait: float) -> None:
        if wait != self._wait_now:
            self.batched.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]
            self._wait_now = wait

    async def _run(self, requests: list[list[Any]]) -> list[Any]:
        self.recent_batches.append(_total(requests))
        with self.trimmer.busy():
            return await asyncio.to_thread(
                call_role_per_request, self.encoder, self.modality, requests
            )

    async def call(self, items: list[Any]) -> Any:
        """One caller's items; pieces larger than a batch are split, results concatenated."""
        size = self.max_batch_size
        pieces = [items[i : i + size] for i in range(0, len(items), size)]
        self._set_wait(self.wait.for_call(time.monotonic()))
        self.waiting += 1
        try:
            results = await asyncio.gather(*(self.batched(piece) for piece in pieces))
        finally:
            self.waiting -= 1
        if results and isinstance(results[0], np.ndarray):
            return np.concatenate(results) if len(results) > 1 else results[0]
        return [item for piece in results for item in piece]

    def stats(self) -> dict[str, Any]:
        batches, self.recent_batches = list(self.recent_batches), deque(maxlen=256)
        return {"batches": batches, "waiting": self.waiting}


@serve.deployment(max_ongoing_requests=32)
class ModalityEncoder:
    def __init__(self, modalities: str | list[str], models: ModelsConfig) -> None:
        limit_threads()
        names = [modalities] if isinstance(modalities, str) else list(modalities)
        self.modalities = [Modality(name) for name in names]
        self.models = models
        encoders = load_encoders(self.modalities, self.models)
        self.trimmer = IdleTrimmer().start()
        self.queues = {
            modality: _ModalityQueue(modality, encoders[modality], self.trimmer)
            for modality in self.modalities
        }

    def _queue(self, modality: str | None) -> _ModalityQueue:
        if modality is None and len(self.queues) == 1:
            return next(iter(self.queues.values()))
        try:
            return self.queues[Modality(modality)]
        except (KeyError, ValueError):
            hosted = ", ".join(r.value for r in self.modalities)
            raise ValueError(f"this encoder replica runs {hosted}, not {modality}") from None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batch size and wait per modality from the Serve config's user_config (see
        ``modality_batch_options``)."""
        for modality, queue in self.queues.items():
            queue.configure(modality_batch_options(user_config, modality))

    def model_id(self, modality: str | None = None) -> str:
        return self._queue(modality).encoder.model_id

    def node_id(self) -> str:
        """The Ray node this replica runs on (recorded in job summaries)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def stats(self, modality: str | None = None) -> dict[str, Any]:
        """Recent model-call batch sizes and requests waiting now (for /metrics)."""
        return self._queue(modality).stats()

    async def __call__(self, items: list[Any], modality: str | None = None) -> Any:
        return await self._queue(modality).call(items)
