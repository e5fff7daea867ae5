"""Decoder deployment (CPU): one streaming request per input, the encoders shared.

The analysis loop runs in a thread of its own per request (a live stream holds one for its
whole life, so a shared executor would cap the streams a replica can run) and calls the
encoder deployments through their handles; closed windows and events stream back to the
caller (which writes the files) and go to the publisher through an outbox that keeps them
until Redis has them (``deployments/delivery``). A bounded queue between the thread and the
response keeps memory flat when the caller reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayActorError, RayTaskError

from mmlm_stream.bus.outbox import Outbox
from mmlm_stream.config import Config
from mmlm_stream.deployments.aggregator import aggregator_factory
from mmlm_stream.deployments.delivery import Delivery
from mmlm_stream.deployments.encoder import DEPLOYMENT_NAMES
from mmlm_stream.operators.source import resolve_source
from mmlm_stream.pipeline.analysis import SourceAnalysis
from mmlm_stream.pipeline.encoding import ModalityEncoders
from mmlm_stream.pipeline.jobs import (
    AnalysisRequest,
    EventsDone,
    JobDone,
    JobFailed,
    JobMessage,
    Progress,
    WindowDone,
)
from mmlm_stream.records.modality import Modality
from mmlm_stream.security.url_policy import api_policy
from mmlm_stream.util.backoff import Backoff
from mmlm_stream.util.errors import MmlmError
from mmlm_stream.util.memory import IdleTrimmer
from mmlm_stream.util.threads import limit_threads

logger = logging.getLogger(__name__)

# How long a call waits for Serve to replace a replica that died (models load again).
REPLACEMENT_WAIT_S = 60.0
PROGRESS_EVERY_S = 0.5
QUEUE_SIZE = 64


class ServeEncoders(ModalityEncoders):
    """ModalityEncoders over the encoder deployments; a call to a dying replica is retried.

    ``timeout_s`` (live sources): a call that takes longer fails the analysis with a
    one-line reason, so a hung replica shows as a restarting stream, never a silent stall.
    """

    def __init__(
        self, models: Any, handles: dict[Modality, Any], timeout_s: float | None = None
    ) -> None:
        super().__init__(models)
        self.handles = handles
        self.timeout_s = timeout_s
        self._ids: dict[str, str] | None = None

    def run(self, modality: Modality, items: Sequence[Any]) -> Any:
        return self._call(
            modality, lambda handle: handle.remote(list(items), modality=modality.value)
        )

    def node_ids(self) -> dict[str, str]:
        """Deployment name → node id of the replica that answered (one call each)."""
        names = {
            modality: _deployment_name(self.handles[modality], modality)
            for modality in self.modalities
        }
        first = {name: modality for modality, name in reversed(names.items())}
        return {name: self._call(r, lambda h: h.node_id.remote()) for name, r in first.items()}

    def model_ids(self) -> dict[str, str]:
        if self._ids is None:
            self._ids = {
                modality.value: self._call(
                    modality, lambda h, modality=modality: h.model_id.remote(modality.value)
                )
                for modality in self.modalities
            }
        return self._ids

    def _call(self, modality: Modality, send: Callable[[Any], Any]) -> Any:
        """One call to a modality's deployment; a replica that died is retried (Serve routes
        the retry to its replacement), an error of the model or a timeout is one line."""
        backoff = Backoff(initial=0.5, maximum=5.0)
        deadline = time.monotonic() + REPLACEMENT_WAIT_S
        while True:
            try:
                return send(self.handles[modality]).result(timeout_s=self.timeout_s)
            except TimeoutError as exc:
                reason = f"{modality.value} encoder did not answer within {self.timeout_s:g}s"
                raise MmlmError(reason) from exc
            except RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                reason = f"{modality.value} encoder failed: {type(cause).__name__}: {cause}"
                raise MmlmError(reason.splitlines()[0]) from exc
            except RayActorError as exc:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("%s replica lost (%s); retrying", modality.value, type(exc).__name__)
                time.sleep(backoff.next_delay())


def _deployment_name(handle: Any, modality: Modality) -> str:
    """The deployment a handle calls (several modalities may share one: ``Encoders``)."""
    return str(getattr(handle, "deployment_name", None) or DEPLOYMENT_NAMES[modality])


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8)
class Decoder:
    def __init__(self, encoders: dict[str, Any], publisher: Any) -> None:
        limit_threads()
        self.handles = {Modality(modality): handle for modality, handle in encoders.items()}
        self.publisher = publisher
        self.trimmer = IdleTrimmer().start()

    async def analyse(self, request: AnalysisRequest) -> AsyncIterator[JobMessage]:
        config = request.config
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[JobMessage | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        stop = threading.Event()
        delivery = Delivery(self.publisher, Outbox(config.live.outbox_max_bytes))
        drain_s = config.redis.close_timeout_s

        def put(message: JobMessage | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(message), loop).result()

        def work() -> None:
            try:
                with self.trimmer.busy():
                    result = self._analyse(request, config, put, stop)
                put(JobDone(result))
            except MmlmError as exc:
                put(JobFailed(str(exc)))
            except Exception as exc:  # report any failure of this input to the caller
                logger.exception("describe of %s failed", request.target)
                put(JobFailed(f"{request.target}: {type(exc).__name__}: {exc}"))
            finally:
                put(None)
                with contextlib.suppress(RuntimeError):  # the replica's loop already closed
                    loop.call_soon_threadsafe(finished.set_result, None)

        finished = loop.create_future()
        threading.Thread(target=work, name=f"describe:{request.source_id}", daemon=True).start()
        try:
            while (message := await queue.get()) is not None:
                if isinstance(message, JobDone | JobFailed):
                    # What the caller does next (restart, report) must come after these.
                    await delivery.drain(drain_s)
                for out in delivery.enqueue(message):
                    yield out
        finally:
            stop.set()
            # The caller left (a stop): what the analysis still closes (its open events,
            # the 'ended' state) is published all the same.
            while not finished.done() or not queue.empty():
                try:
                    if (message := queue.get_nowait()) is not None:
                        delivery.enqueue(message)
                except asyncio.QueueEmpty:
                    await asyncio.sleep(0.05)
            await delivery.drain(drain_s)
            delivery.close()

    async def flush_publisher(self, timeout_s: float = 30.0) -> bool:
        """Wait until the publisher delivered everything (end of a batch job)."""
        return await self.publisher.flush.remote(timeout_s)

    def _analyse(
        self, request: AnalysisRequest, config: Config, put: Any, stop: threading.Event
    ) -> Any:
        spec = resolve_source(request.target, request.source_id)
        if request.untrusted:  # today's policy, also for a stream resumed from the registry
            spec = replace(spec, policy=api_policy(config.api))
        live = config.decode.live
        if live is None:
            live = spec.live_by_scheme or config.decode.loop
        timeout_s = config.live.call_timeout_s if live else None
        encoders = ServeEncoders(config.models, self.handles, timeout_s)
        finished = threading.Event()

        def heartbeat() -> None:
            """Progress on a timer, not per item: a stuck loop shows as growing lag."""
            while not finished.wait(PROGRESS_EVERY_S):
                stats = analysis.queue.stats if analysis.queue is not None else None
                put(
                    Progress(
                        analysis.progress,
                        frames_in=stats.frames_in if stats else 0,
                        frames_dropped=stats.frames_dropped if stats else 0,
                        lag_s=analysis.lag_s(),
                    )
                )

        analysis = SourceAnalysis(
            spec,
            config,
            encoders,
            on_window=lambda output: put(WindowDone(output)),
            on_events=lambda events: put(EventsDone(events)),
            stop=stop,
            aggregator=aggregator_factory(
                spec.source_id,
                config,
                encoders.channels,
                encoders.model_ids(),
                self.handles[Modality.TEXT],
                timeout_s,
            ),
        )
        beat = threading.Thread(target=heartbeat, name=f"progress:{spec.source_id}", daemon=True)
        beat.start()
        try:
            result = analysis.run()
        finally:
            finished.set()
            beat.join()
            analysis.aggregator.close()  # no aggregator outlives its analysis
        result.nodes = {"Decoder": ray.get_runtime_context().get_node_id(), **encoders.node_ids()}
        return result
