"""Publisher deployment: the one holder of the Redis connection and its retry buffer.

Records arrive fire-and-forget from the decoders; the bus publishes each window/event id
once, buffers while Redis is away, and retries with backoff.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from mmlm_stream.bus import NullPublisher, RedisPublisher
from mmlm_stream.bus import Publisher as BusPublisher
from mmlm_stream.bus_config import RedisConfig
from mmlm_stream.records import EventRecord, WindowRecord


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=64)
class Publisher:
    def __init__(self, url: str | None, config: dict[str, Any]) -> None:
        cfg = RedisConfig.model_validate(config)
        self.bus: BusPublisher = RedisPublisher(url, cfg) if url else NullPublisher()

    def publish(self, windows: list[WindowRecord], events: list[EventRecord]) -> None:
        for window in windows:
            self.bus.publish_window(window)
        for event in events:
            self.bus.publish_event(event)

    def set_state(self, source: str, state: dict[str, Any]) -> None:
        """A live stream's state in the streams hash (and on its live channel)."""
        self.bus.set_stream_state(source, state)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything buffered reached Redis (or the timeout)."""
        return await asyncio.to_thread(self.bus.flush, timeout_s)

    def metrics(self) -> dict[str, int]:
        counts = getattr(self.bus, "metrics", None)
        return counts() if callable(counts) else {}

    def __del__(self) -> None:
        self.bus.close()
