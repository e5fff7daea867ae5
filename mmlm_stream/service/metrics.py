"""Prometheus metrics of the pipeline and of the HTTP API, each in a private registry.

Private registries (not prometheus_client's global one) so several apps or backends in one
process (tests, a Serve replica that is restarted in place) never clash, and so ``/metrics``
shows exactly these series. The pipeline's numbers often come from other processes (decoder
replicas, the publisher deployment); the helpers take plain numbers, and cumulative counts
(``set_frames_dropped``, ``set_publisher_counts``) are turned into counter increments, with a
count that went down (a restarted replica) taken as a restart from zero.

Names (all prefixed ``mmlm_``):

- ``stream_input_fps{stream}``, ``stream_lag_seconds{stream}``, ``stream_frames_dropped_total
  {stream}``, ``stream_state{stream,state}`` (1 for the current state),
  ``stream_windows_total{stream}``;
- ``window_latency_seconds{stream}``: histogram of ``published_at`` minus the wall-clock
  moment the window's media ended (live sources);
- ``encoder_batch_size{modality}`` (histogram), ``encoder_queue_depth{modality}`` (gauge);
- ``redis_published_total``, ``redis_publish_errors_total``, ``redis_dropped_total``,
  ``redis_buffered``, ``redis_oom_total``, ``redis_full``, ``redis_trimmed_total``;
- ``stream_restarts_total{stream}``: analyses the supervisor restarted;
- ``sink_delivered_total{sink}``, ``sink_dead_letters_total{sink}``, ``sink_retries_total{sink}``,
  ``sink_down{sink}``: the configured sinks (docs/integrations.md);
- API: ``api_requests_total{method,route,status}``, ``api_request_seconds{route}``,
  ``api_sse_clients``, ``api_sse_events_total``, ``api_backend_metrics_up``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format: what ``exposition()`` writes and every Prometheus reads."""

STREAM_STATES = (
    "connecting",
    "streaming",
    "degraded",
    "reconnecting",
    "failed",
    "stopped",
    "ended",
)
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_stamp(stamp: str | None) -> datetime | None:
    """An ISO-8601 stamp (``...Z`` or with an offset) as an aware datetime; None if unreadable."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def window_latency_s(record: Mapping[str, Any] | Any) -> float | None:
    """``published_at`` minus the wall-clock end of the window's media (``wall_start`` +
    ``end - start``): how late a live window reached subscribers. None without wall time."""
    get = record.get if isinstance(record, Mapping) else lambda name: getattr(record, name, None)
    published, wall_start = parse_stamp(get("published_at")), parse_stamp(get("wall_start"))
    start, end = get("start"), get("end")
    if published is None or wall_start is None or start is None or end is None:
        return None
    wall_end = wall_start + timedelta(seconds=float(end) - float(start))
    return (published - wall_end).total_seconds()


class _Totals:
    """Turns cumulative counts into counter increments (a drop means the source restarted)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def advance(self, counter: Any, key: tuple[str, ...], total: float) -> None:
        with self._lock:
            last = self._last.get(key, 0.0)
            delta = total - last if total >= last else total
            self._last[key] = total
        if delta > 0:
            counter.inc(delta)

    def forget(self, prefix: tuple[str, ...]) -> None:
        with self._lock:
            for key in [k for k in self._last if k[: len(prefix)] == prefix]:
                del self._last[key]


class PipelineMetrics:
    """The pipeline's series (module docstring); the backend's ``metrics_text()`` returns
    ``exposition()``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.input_fps = Gauge(
            "mmlm_stream_input_fps",
            "Frames per second arriving from the stream.",
            ["stream"],
            registry=r,
        )
        self.lag = Gauge(
            "mmlm_stream_lag_seconds",
            "How far processing is behind the stream's wall clock.",
            ["stream"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "mmlm_stream_frames_dropped",
            "Frames dropped by backpressure.",
            ["stream"],
            registry=r,
        )
        self.windows = Counter("mmlm_stream_windows", "Windows published.", ["stream"], registry=r)
        self.state = Gauge(
            "mmlm_stream_state",
            "1 for the stream's current state.",
            ["stream", "state"],
            registry=r,
        )
        self.window_latency = Histogram(
            "mmlm_window_latency_seconds",
            "published_at minus the wall-clock end of the window's media (live sources).",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mmlm_encoder_batch_size",
            "Items per encoder inference call.",
            ["modality"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "mmlm_encoder_queue_depth", "Items waiting for an encoder.", ["modality"], registry=r
        )
        self.redis_published = Counter(
            "mmlm_redis_published", "Records added to the Redis streams.", registry=r
        )
        self.redis_errors = Counter(
            "mmlm_redis_publish_errors",
            "Failed Redis publish attempts (retries included).",
            registry=r,
        )
        self.redis_dropped = Counter(
            "mmlm_redis_dropped", "Windows dropped from a full publish buffer.", registry=r
        )
        self.redis_buffered = Gauge(
            "mmlm_redis_buffered", "Records waiting to be sent to Redis.", registry=r
        )
        self.redis_oom = Counter(
            "mmlm_redis_oom", "Times Redis answered out of memory (episodes).", registry=r
        )
        self.redis_full = Gauge(
            "mmlm_redis_full", "1 while records wait because Redis is out of memory.", registry=r
        )
        self.redis_trimmed = Counter(
            "mmlm_redis_trimmed", "Entries removed by the retention sweep.", registry=r
        )
        self.sink_delivered = Counter(
            "mmlm_sink_delivered", "Events a sink's far side confirmed.", ["sink"], registry=r
        )
        self.sink_dead = Counter(
            "mmlm_sink_dead_letters", "Events a sink dead-lettered.", ["sink"], registry=r
        )
        self.sink_retries = Counter(
            "mmlm_sink_retries", "Failed deliveries tried again.", ["sink"], registry=r
        )
        self.sink_down = Gauge(
            "mmlm_sink_down", "1 while a sink's far side cannot be reached.", ["sink"], registry=r
        )
        self.restarts = Counter(
            "mmlm_stream_restarts",
            "Analyses of a live stream restarted by the supervisor.",
            ["stream"],
            registry=r,
        )
        self._totals = _Totals()

    # -- per stream ------------------------------------------------------------------------------

    def set_stream(
        self,
        stream: str,
        *,
        input_fps: float | None = None,
        lag_s: float | None = None,
        frames_dropped_total: int | None = None,
        state: str | None = None,
    ) -> None:
        """Update what is known of one stream; None leaves a value as it is."""
        if input_fps is not None:
            self.input_fps.labels(stream).set(input_fps)
        if lag_s is not None:
            self.lag.labels(stream).set(lag_s)
        if frames_dropped_total is not None:
            self.set_frames_dropped(stream, frames_dropped_total)
        if state is not None:
            self.set_state(stream, state)

    def add_frames_dropped(self, stream: str, count: int = 1) -> None:
        self.frames_dropped.labels(stream).inc(count)

    def set_frames_dropped(self, stream: str, total: int) -> None:
        """From a cumulative count (e.g. reported by the decoder replica)."""
        self._totals.advance(self.frames_dropped.labels(stream), ("dropped", stream), total)

    def set_state(self, stream: str, state: str) -> None:
        for name in {*STREAM_STATES, state}:
            self.state.labels(stream, name).set(1 if name == state else 0)

    def window_published(self, stream: str, latency_s: float | None = None) -> None:
        """Count a window and, when known (live sources), observe its latency."""
        self.windows.labels(stream).inc()
        if latency_s is not None:
            self.window_latency.labels(stream).observe(max(0.0, latency_s))

    def observe_window(self, record: Mapping[str, Any] | Any) -> None:
        """``window_published`` from a window record (``WindowRecord`` or its JSON dict)."""
        source = record.get("source") if isinstance(record, Mapping) else record.source
        self.window_published(str(source), window_latency_s(record))

    def remove_stream(self, stream: str) -> None:
        """Drop a removed stream's series so ``/metrics`` stops showing it."""
        for metric in (self.input_fps, self.lag, self.frames_dropped, self.windows, self.restarts):
            _remove(metric, (stream,))
        _remove(self.window_latency, (stream,))
        for name in self._state_names(stream):
            _remove(self.state, (stream, name))
        self._totals.forget(("dropped", stream))

    def _state_names(self, stream: str) -> Iterable[str]:
        return {labels[1] for labels in _label_sets(self.state) if labels[0] == stream}

    # -- encoders and the bus --------------------------------------------------------------------

    def encoder_batch(self, modality: str, size: int) -> None:
        self.batch_size.labels(modality).observe(size)

    def set_queue_depth(self, modality: str, depth: int) -> None:
        self.queue_depth.labels(modality).set(depth)

    def set_publisher_counts(self, counts: Mapping[str, int]) -> None:
        """From ``RedisPublisher.metrics()`` (cumulative: published, errors, dropped, buffered)."""
        for name, counter in (
            ("published", self.redis_published),
            ("errors", self.redis_errors),
            ("dropped", self.redis_dropped),
            ("oom", self.redis_oom),
            ("trimmed", self.redis_trimmed),
        ):
            if name in counts:
                self._totals.advance(counter, ("redis", name), counts[name])
        if "buffered" in counts:
            self.redis_buffered.set(counts["buffered"])
        if "full" in counts:
            self.redis_full.set(counts["full"])

    def set_sink_counts(self, sinks: Mapping[str, Mapping[str, Any]]) -> None:
        """From the Sinks deployment's ``stats()`` (cumulative per sink)."""
        for name, counts in sinks.items():
            for key, counter in (
                ("delivered", self.sink_delivered),
                ("dead", self.sink_dead),
                ("retries", self.sink_retries),
            ):
                self._totals.advance(counter.labels(sink=name), ("sink", name, key), counts[key])
            self.sink_down.labels(sink=name).set(1 if counts.get("down") else 0)

    def stream_restarted(self, stream: str) -> None:
        self.restarts.labels(stream=stream).inc()

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


class ApiMetrics:
    """The HTTP layer's own series (requests, SSE clients)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mmlm_api_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mmlm_api_request_seconds",
            "Time to answer (to the first byte for /events).",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.sse_clients = Gauge(
            "mmlm_api_sse_clients", "Clients connected to /events.", registry=r
        )
        self.sse_events = Counter(
            "mmlm_api_sse_events", "Events sent to /events clients.", registry=r
        )
        self.backend_up = Gauge(
            "mmlm_api_backend_metrics_up",
            "1 when the pipeline's metrics could be read for this scrape.",
            registry=r,
        )

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


def _label_sets(metric: Any) -> list[tuple[str, ...]]:
    """The label values a labelled metric has children for (prometheus_client keeps them in
    ``_metrics``; there is no public accessor)."""
    with metric._lock:
        return list(metric._metrics)


def _remove(metric: Any, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
