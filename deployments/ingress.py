"""The HTTP ingress (FastAPI, contract §7) of the service: ``mmlm-stream serve``.

The app is built after the constructor (``__serve_build_asgi_app__``) so its routes call a
backend that holds this replica's handles; registered live streams resume at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve

from mmlm_stream.bus.redis_bus import RedisPublisher
from mmlm_stream.bus.transport import NullPublisher
from mmlm_stream.config import Config
from mmlm_stream.pipeline.jobs import AnalysisRequest, JobMessage
from mmlm_stream.service.api import create_app
from mmlm_stream.service.backend import PipelineBackend

logger = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    async def __init__(
        self,
        decoder: Any,
        encoders: dict[str, Any],
        publisher: Any,
        config: Config,
        redis_url: str | None,
        jobs_dir: str,
        sinks: Any = None,
    ) -> None:
        self.decoder = decoder
        self.sinks = sinks  # the Sinks deployment (sinks: configured), deployed with this one
        self.encoders = encoders
        self.publisher = publisher
        self.config = config
        self.redis_url = redis_url
        # Redis carries this replica's own records and holds the stream registry.
        bus: RedisPublisher | NullPublisher = (
            RedisPublisher(redis_url, self.config.redis) if redis_url else NullPublisher()
        )
        self.backend = PipelineBackend(
            self.config,
            self._run,
            self._embed,
            bus,
            bus,
            redis_url,
            Path(jobs_dir),
            encoder_stats=self._encoder_stats,
            publisher_metrics=self._publisher_metrics,
            publisher_healthy=self._publisher_healthy,
            sink_stats=self._sink_stats if sinks is not None else None,
        )
        if redis_url:
            resumed = await self.backend.resume()
            logger.info("resumed %d registered streams", resumed)

    async def _sink_stats(self) -> dict[str, dict[str, Any]]:
        return await self.sinks.stats.remote()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(
            self.backend,
            self.config.api,
            self.redis_url,
            redis_config=self.config.redis,
            snapshots=self.config.snapshots,
        )

    async def _run(self, request: AnalysisRequest) -> AsyncIterator[JobMessage]:
        stream = self.decoder.options(stream=True).analyse.remote(request)
        try:
            async for message in stream:
                yield message
        finally:
            stream.cancel()

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await self.encoders["text"].remote(texts, modality="text")

    async def _publisher_metrics(self) -> dict[str, int]:
        return await self.publisher.metrics.remote()

    async def _publisher_healthy(self) -> bool:
        return await self.publisher.healthy.remote()

    async def _encoder_stats(self) -> dict[str, dict[str, Any]]:
        modalities = list(self.encoders)
        stats = await asyncio.gather(*(self.encoders[r].stats.remote(r) for r in modalities))
        return dict(zip(modalities, stats, strict=True))
