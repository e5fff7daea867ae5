"""A transport in one file: keeps every record in lists (a stand-in for Kafka or MQTT).

The recipe of docs/architecture.md: subclass ``bus.transport.Publisher`` and implement
``publish_window``, ``publish_event``, ``set_stream_state`` and ``close`` (``flush`` and
``wait_delivered`` have defaults for transports that deliver at once). The config picks it
with ``transport: {publisher: "extensions.toy_publisher:ListPublisher", options: {name: x}}``.
"""

from __future__ import annotations

from typing import Any

from mmlm_stream.bus.transport import Publisher, StateLike, state_dict
from mmlm_stream.records.schema import EventRecord, WindowRecord


class ListPublisher(Publisher):
    def __init__(self, name: str = "toy") -> None:
        self.name = name
        self.windows: list[WindowRecord] = []
        self.events: list[EventRecord] = []
        self.states: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def publish_window(self, record: WindowRecord) -> int:
        self.windows.append(record)
        return len(self.windows) + len(self.events) + len(self.states)

    def publish_event(self, record: EventRecord) -> int:
        self.events.append(record)
        return len(self.windows) + len(self.events) + len(self.states)

    def set_stream_state(self, source: str, state: StateLike) -> int:
        self.states.append((source, state_dict(state)))
        return len(self.windows) + len(self.events) + len(self.states)

    def close(self) -> None:
        self.closed = True
