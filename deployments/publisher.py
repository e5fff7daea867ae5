"""Publisher deployment: the one holder of the transport (Redis unless ``transport.publisher``
says otherwise) and its retry buffer.

``deliver`` answers only once Redis has settled the records it was given (while Redis is
away it waits), so its callers keep their records until then and hand them to the next
replica if this one dies (``mmlm_stream.bus.outbox``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from mmlm_stream.bus.outbox import Outgoing
from mmlm_stream.bus.transport import Publisher as BusPublisher
from mmlm_stream.bus.transport import open_publisher
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.transport import TransportConfig
from mmlm_stream.records.schema import EventRecord, WindowRecord

MAX_ONGOING = 64


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=MAX_ONGOING)
class Publisher:
    def __init__(
        self, url: str | None, config: RedisConfig, transport: TransportConfig | None = None
    ) -> None:
        self.bus: BusPublisher = open_publisher(transport or TransportConfig(), url, config)
        # Waiting out a Redis outage holds a thread per caller: not the loop's default pool.
        self._waiters = ThreadPoolExecutor(MAX_ONGOING, thread_name_prefix="deliver")

    async def deliver(self, items: list[Outgoing]) -> int:
        """Hand ``items`` to the bus in order; return once Redis has them all."""
        seq = 0
        for item in items:
            if item.kind == "state":
                seq = self.bus.set_stream_state(item.source, item.state or {})
            elif isinstance(item.record, WindowRecord):
                seq = self.bus.publish_window(item.record)
            elif isinstance(item.record, EventRecord):
                seq = self.bus.publish_event(item.record)
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(self._waiters, self.bus.wait_delivered, seq, 5.0):
            if not self.bus.healthy():
                raise RuntimeError("the Redis sender of this Publisher replica stopped")
        return len(items)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything buffered reached Redis (or the timeout)."""
        return await asyncio.to_thread(self.bus.flush, timeout_s)

    def healthy(self) -> bool:
        return self.bus.healthy()

    def metrics(self) -> dict[str, int]:
        counts = getattr(self.bus, "metrics", None)
        return counts() if callable(counts) else {}

    def check_health(self) -> None:
        """Serve's replica health check: a Publisher whose sender died is replaced."""
        if not self.bus.healthy():
            raise RuntimeError("Redis sender thread stopped")

    def __del__(self) -> None:
        self.bus.close()
