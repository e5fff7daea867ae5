"""Runs one sink: a Redis consumer group over all events, acknowledged after delivery.

The group is ``sink:<name>`` on ``{prefix}:versions`` (every version of every event: a
condition's opening and its closing) and the consumer is ``sink-<name>``, the
same name on every start, so a sink that was stopped or killed first reads again what it
had been given and not acknowledged (at-least-once), then goes on from where it was. A new
sink starts at the events published from then on. Per event:

- left out by the sink's filter: acknowledged, not delivered;
- delivered and confirmed: acknowledged;
- ``FarSideDown``: waited out with backoff, however long, without counting attempts (one log
  line when it goes down, one when it is back); the events meanwhile wait in Redis;
- ``DeliveryFailed``: tried again with backoff up to ``max_attempts`` (a permanent failure at
  once), then written to the dead letters ``{prefix}:dead:sink:<name>`` with the reason and
  acknowledged.

Windows (for sinks that want them, e.g. MQTT's retained descriptions) are read by a second
thread that tails every source's window stream: best effort, latest wins, because a newer
window replaces an older description anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from mmlm_stream.bus.client import Subscriber, read_record
from mmlm_stream.bus.redis_client import RETRYABLE_ERRORS, client_for, error_reason
from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.sinks import MqttSinkConfig, WebhookSinkConfig
from mmlm_stream.records.schema import EventRecord, UnreadableRecord, WindowRecord
from mmlm_stream.sinks.base import DeliveryFailed, FarSideDown, Sink, accepts
from mmlm_stream.util.backoff import Backoff

logger = logging.getLogger(__name__)

SOURCE_SCAN_S = 5.0


@dataclass
class SinkStats:
    delivered: int = 0
    filtered: int = 0
    dead: int = 0
    retries: int = 0
    windows: int = 0
    down_since: float | None = None
    last_error: str | None = None
    latencies_ms: list[float] = field(default_factory=list)


def group_name(name: str) -> str:
    return f"sink:{name}"


class SinkRunner:
    """One configured sink and the threads that feed it (``start``/``stop``, or ``run``)."""

    def __init__(
        self,
        name: str,
        config: MqttSinkConfig | WebhookSinkConfig,
        sink: Sink,
        redis_url: str,
        redis_config: RedisConfig,
    ) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.redis_url = redis_url
        self.redis_config = redis_config
        self.subscriber = Subscriber(
            redis_url,
            prefix=redis_config.prefix,
            group=group_name(name),
            consumer=f"sink-{name}",
            config=redis_config,
            versions=True,
        )
        self.stats = SinkStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> SinkRunner:
        self.sink.start()
        self._threads = [threading.Thread(target=self._events, name=f"sink:{self.name}")]
        if self.sink.wants_windows:
            self._threads.append(
                threading.Thread(target=self._windows, name=f"sink:{self.name}:windows")
            )
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def run(self) -> None:
        """Start and block until ``stop`` (``mmlm-stream sink NAME``)."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                if not all(thread.is_alive() for thread in self._threads):
                    raise RuntimeError(f"sink {self.name}: a delivery thread stopped")
        finally:
            self.stop()

    def alive(self) -> bool:
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.subscriber.stop()
        for thread in self._threads:
            thread.join(timeout_s)
        self.subscriber.close()
        self.sink.close()

    def _events(self) -> None:
        for event in self.subscriber.iter_events(block_ms=1000, batch=16):
            if self._stop.is_set():
                return  # not acknowledged: delivered again on the next start
            if not accepts(self.config, event):
                self.stats.filtered += 1
                continue
            if not self._deliver(event):
                return

    def _deliver(self, event: EventRecord) -> bool:
        """Deliver with the retry rules of the module docstring; False when stopped first."""
        attempts = 0
        failing = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        down = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        while not self._stop.is_set():
            try:
                self.sink.deliver(event)
            except FarSideDown as exc:
                if self.stats.down_since is None:
                    self.stats.down_since = time.monotonic()
                    logger.warning("sink %s: %s; events wait in Redis", self.name, exc.reason)
                self.stats.last_error = exc.reason
                self._stop.wait(down.next_delay())
                continue
            except DeliveryFailed as exc:
                attempts += 1
                self.stats.last_error = exc.reason
                if exc.permanent or attempts >= self.config.max_attempts:
                    reason = f"{exc.reason} (attempt {attempts} of {self.config.max_attempts})"
                    logger.warning(
                        "sink %s: event %s dead-lettered: %s", self.name, event.id, reason
                    )
                    self.subscriber.reject(f"sink {self.name}: {reason}")
                    self.stats.dead += 1
                    return True
                self.stats.retries += 1
                self._stop.wait(failing.next_delay())
                continue
            self._back_up()
            self.stats.delivered += 1
            self._note_latency(event)
            return True
        return False

    def _back_up(self) -> None:
        if self.stats.down_since is not None:
            logger.warning(
                "sink %s: delivering again after %.1fs",
                self.name,
                time.monotonic() - self.stats.down_since,
            )
            self.stats.down_since = None

    def _note_latency(self, event: EventRecord) -> None:
        """Publish-to-confirmed time (``published_at`` is stamped by the bus)."""
        from datetime import UTC, datetime

        if event.published_at is None:
            return
        try:
            sent = datetime.fromisoformat(event.published_at.replace("Z", "+00:00"))
        except ValueError:
            return
        latency = (datetime.now(UTC) - sent).total_seconds() * 1000
        recent = self.stats.latencies_ms
        recent.append(latency)
        if len(recent) > 10_000:
            del recent[:5_000]

    def _windows(self) -> None:
        """Tail every source's window stream (module docstring); sources found by a scan."""
        client = client_for(self.redis_url, self.redis_config, socket_timeout=None)
        keys = self.subscriber.keys
        pattern = keys.windows("*")
        cursors: dict[str, Any] = {}
        next_scan = 0.0
        backoff = Backoff(self.redis_config.retry_initial_s, self.redis_config.retry_max_s)
        try:
            while not self._stop.is_set():
                try:
                    if time.monotonic() >= next_scan:
                        self._find_sources(client, pattern, cursors)
                        next_scan = time.monotonic() + SOURCE_SCAN_S
                    if not cursors:
                        self._stop.wait(0.5)
                        continue
                    reply = client.xread(cursors, count=64, block=1000)
                    backoff.reset()
                except RETRYABLE_ERRORS as exc:
                    logger.warning("sink %s: windows: %s", self.name, error_reason(exc))
                    self._stop.wait(backoff.next_delay())
                    continue
                for stream, entries in reply or []:
                    name = stream.decode() if isinstance(stream, bytes) else stream
                    for entry_id, fields in entries:
                        cursors[name] = entry_id
                        self._hand_window(fields or {})
        finally:
            client.close()

    def _find_sources(self, client: redis.Redis, pattern: str, cursors: dict[str, Any]) -> None:
        for key in client.scan_iter(match=pattern, count=500, _type="stream"):
            name = key.decode() if isinstance(key, bytes) else key
            if name in cursors:
                continue
            newest = client.xrevrange(name, count=1)
            cursors[name] = newest[0][0] if newest else "0-0"
            if newest:  # the latest description, republished after a restart
                self._hand_window(newest[0][1] or {})

    def _hand_window(self, fields: dict[Any, Any]) -> None:
        try:
            window = read_record(fields, WindowRecord)
        except UnreadableRecord:
            return
        if self.config.sources and window.source not in self.config.sources:
            return
        try:
            self.sink.deliver_window(window)
            self.stats.windows += 1
        except (FarSideDown, DeliveryFailed) as exc:
            self.stats.last_error = exc.reason
