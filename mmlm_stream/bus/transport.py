"""The transport boundary: what the pipeline and the service need of whatever carries records.

A transport is one file implementing ``Publisher`` (as Frigate's
``comms/base_communicator.py``): hand over windows, events and stream states without
blocking, flush, close. Where live streams are registered (so a restarted service resumes
them) is a separate interface, ``StreamRegistry``: a transport need not be a database, and
Redis holds the registry whatever else carries the records. ``RedisPublisher``
(``bus/redis_bus.py``) is both; docs/architecture.md has the recipe for a new transport.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from mmlm_stream.config.bus import RedisConfig
from mmlm_stream.config.transport import REDIS, TransportConfig, resolve_class
from mmlm_stream.records.channels import StreamStatus
from mmlm_stream.records.schema import EventRecord, WindowRecord, utc_stamp
from mmlm_stream.util.errors import ConfigError

StateLike = StreamStatus | Mapping[str, Any] | str


def _json_object(value: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(value, str):
        loaded = json.loads(value)
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        return loaded
    return dict(value)


def state_dict(state: StateLike) -> dict[str, Any]:
    """A stream state as a JSON object; a ``StreamStatus`` from the decoder becomes
    ``{"state", "time", "wall", "attempt", "reason"?}``."""
    if isinstance(state, StreamStatus):
        out: dict[str, Any] = {
            "state": state.state.value,
            "time": state.time,
            "wall": utc_stamp(state.wall),
            "attempt": state.attempt,
        }
        if state.reason:
            out["reason"] = state.reason
        return out
    return _json_object(state)


class Publisher(ABC):
    """What the pipeline hands to whatever carries its output; swap the transport, not callers."""

    @abstractmethod
    def publish_window(self, record: WindowRecord) -> int:
        """Hand over a window; never blocks on the transport. Returns its sequence number."""

    @abstractmethod
    def publish_event(self, record: EventRecord) -> int:
        """Hand over an event version (ongoing or closing); never blocks on the transport."""

    @abstractmethod
    def set_stream_state(self, source: str, state: StateLike) -> int:
        """Record a live stream's state and announce it (kind ``status``)."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over has been delivered; False on timeout."""
        return True

    def wait_delivered(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until everything up to sequence number ``seq`` was delivered (or given up
        by a documented policy); False on timeout."""
        return self.flush(timeout)

    def healthy(self) -> bool:
        """Whether records handed over can still reach the transport (for /healthz)."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Deliver what is held (within the transport's limit) and release resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StreamRegistry(ABC):
    """The live streams a service runs, kept where a restarted service finds them."""

    @abstractmethod
    def register_stream(self, source: str, info: Mapping[str, Any] | str) -> None:
        """Add (or update) a live stream in the registry; keeps its last state."""

    @abstractmethod
    def unregister_stream(self, source: str) -> None:
        """Remove a live stream from the registry."""

    @abstractmethod
    def streams(self) -> dict[str, dict[str, Any]]:
        """Registered streams: source -> registration info plus ``state``."""

    def open_events(self, source: str, scan: int = 1000) -> list[EventRecord]:
        """Events of ``source`` still open (their latest version ongoing) among its last
        ``scan`` entries: what an analysis that died with its supervisor left open."""
        return []


class NullPublisher(Publisher, StreamRegistry):
    """Publishes and registers nothing: for runs without a bus, so callers need no ``if``."""

    def publish_window(self, record: WindowRecord) -> int:
        return 0

    def publish_event(self, record: EventRecord) -> int:
        return 0

    def set_stream_state(self, source: str, state: StateLike) -> int:
        return 0

    def register_stream(self, source: str, info: Mapping[str, Any] | str) -> None:
        pass

    def unregister_stream(self, source: str) -> None:
        pass

    def streams(self) -> dict[str, dict[str, Any]]:
        return {}

    def close(self) -> None:
        pass


def open_publisher(transport: TransportConfig, url: str | None, redis: RedisConfig) -> Publisher:
    """The configured transport: Redis at ``url`` (nothing when ``url`` is empty: records
    are not published), or the configured class built with its options."""
    if transport.publisher != REDIS:
        cls = resolve_class(transport.publisher)
        if not issubclass(cls, Publisher):
            raise ConfigError(
                f"transport.publisher: {transport.publisher} is not a bus.transport.Publisher"
            )
        return cls(**transport.options)
    if not url:
        return NullPublisher()
    from mmlm_stream.bus.redis_bus import RedisPublisher

    return RedisPublisher(url, redis)
