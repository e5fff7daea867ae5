"""A Decoder request's records on their way to the Publisher deployment, kept until acked.

Each message of the analysis goes into an ``Outbox``; one task hands its oldest records to
``Publisher.deliver`` (which answers once Redis has them) and, when that call fails (the
replica died), hands the same records again after a backoff, to whichever replica Serve
routes to. When the outbox bound drops windows, a ``degraded`` stream event says so (and a
``streaming`` one once the backlog is halved again); both reach the caller as messages.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mmlm_stream.bus.outbox import Outbox
from mmlm_stream.pipeline.jobs import EventsDone, JobMessage, WindowDone
from mmlm_stream.records.channels import StreamState, StreamStatus
from mmlm_stream.records.schema import EventRecord
from mmlm_stream.records.stream_events import registry_state, status_event
from mmlm_stream.util.backoff import Backoff

logger = logging.getLogger(__name__)

BATCH = 256


class Delivery:
    def __init__(self, publisher: Any, outbox: Outbox) -> None:
        self.publisher = publisher
        self.outbox = outbox
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._degraded = False
        self._notices: list[JobMessage] = []  # transitions the caller has not seen yet
        self._last: tuple[str, float] | None = None  # source and media time seen last
        self._task = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, message: JobMessage) -> list[JobMessage]:
        """Keep what ``message`` publishes; returns the messages for the caller: it, plus any
        degraded/recovered transition since the last call."""
        out: list[JobMessage] = [*self._notices, message]
        self._notices.clear()
        dropped = 0
        if isinstance(message, WindowDone):
            window = message.output.window
            self._last = (window.source, window.end)
            dropped += self.outbox.add_window(window)
            for event in message.output.events:
                dropped += self.outbox.add_event(event)
        elif isinstance(message, EventsDone):
            for event in message.events:
                dropped += self._add_event(event)
        if dropped and not self._degraded and self._last is not None:
            reason = f"Redis backlog over its bound: {self.outbox.dropped} windows dropped"
            out.append(self._transition(StreamState.DEGRADED, reason))
        if self.outbox.bytes or len(self.outbox):
            self._empty.clear()
            self._wake.set()
        return out

    def _add_event(self, event: EventRecord) -> int:
        dropped = self.outbox.add_event(event)
        if event.type == "stream":
            dropped += self.outbox.add_state(event.source, registry_state(event))
        return dropped

    def _transition(self, state: StreamState, reason: str) -> EventsDone:
        assert self._last is not None
        source, media_time = self._last
        self._degraded = state is StreamState.DEGRADED
        event = status_event(StreamStatus(source, state, media_time, reason=reason))
        logger.warning("%s: %s", source, reason)
        self._add_event(event)
        return EventsDone([event])

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything kept so far was delivered (False after ``timeout_s``)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            logger.warning("%d records not yet in Redis after %.0fs", len(self.outbox), timeout_s)
            return False
        return True

    def close(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self.outbox):
                batch = self.outbox.take(BATCH)
                try:
                    await self.publisher.deliver.remote(batch)
                except asyncio.CancelledError:
                    self.outbox.failed()
                    raise
                except Exception as exc:  # the replica died or is restarting: same records again
                    self.outbox.failed()
                    if backoff.attempt == 0:
                        logger.warning("publisher unavailable (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(backoff.next_delay())
                    continue
                self.outbox.done()
                backoff.reset()
                if self._degraded and self.outbox.bytes < self.outbox.max_bytes // 2:
                    self._notices.append(
                        self._transition(StreamState.STREAMING, "Redis backlog cleared")
                    )
            self._empty.set()
