"""What a producer keeps until the publisher confirmed that Redis has it (at-least-once).

The Decoder hands every window, event and stream state to the Publisher deployment, whose
buffer dies with its replica. So the Decoder keeps each record here until a ``deliver``
call returned (the Publisher answers only once Redis has settled the records) and hands
the same records again to whichever replica answers next if that call failed; the
publish script's idempotency makes the repeat harmless.

Bounded by bytes of JSON (``live.outbox_max_bytes``): when full, the oldest windows that
are not being delivered right now are dropped and counted; events and states are never
dropped (they are few, and losing a state or an alert is worse than exceeding the bound).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from mmlm_stream.records.schema import EventRecord, WindowRecord

Kind = Literal["window", "event", "state"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record on its way to the bus: a window, an event version, or a stream state."""

    kind: Kind
    source: str
    record: WindowRecord | EventRecord | None = None
    state: dict[str, Any] | None = None
    size: int = 0


class Outbox:
    """FIFO of ``Outgoing`` with a byte bound; ``take``/``done`` mark the batch in flight."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        self._items: deque[Outgoing] = deque()
        self._inflight = 0

    def __len__(self) -> int:
        return len(self._items)

    def add_window(self, record: WindowRecord) -> int:
        """Queue a window; returns how many windows the bound dropped because of it."""
        return self._add(Outgoing("window", record.source, record=record, size=_size(record)))

    def add_event(self, record: EventRecord) -> int:
        return self._add(Outgoing("event", record.source, record=record, size=_size(record)))

    def add_state(self, source: str, state: dict[str, Any]) -> int:
        return self._add(Outgoing("state", source, state=state, size=256))

    def take(self, limit: int) -> list[Outgoing]:
        """The oldest ``limit`` items, which stay queued (and undroppable) until ``done``."""
        batch = [self._items[i] for i in range(min(limit, len(self._items)))]
        self._inflight = len(batch)
        return batch

    def done(self) -> None:
        """The batch handed out by ``take`` was delivered."""
        for _ in range(self._inflight):
            self.bytes -= self._items.popleft().size
        self._inflight = 0

    def failed(self) -> None:
        """The batch was not delivered: it stays first in line for the next attempt."""
        self._inflight = 0

    def _add(self, item: Outgoing) -> int:
        self._items.append(item)
        self.bytes += item.size
        dropped = 0
        if self.bytes > self.max_bytes:
            kept: deque[Outgoing] = deque()
            for index, queued in enumerate(self._items):
                droppable = index >= self._inflight and queued.kind == "window"
                if droppable and self.bytes > self.max_bytes and queued is not item:
                    self.bytes -= queued.size
                    dropped += 1
                    continue
                kept.append(queued)
            self._items = kept
        self.dropped += dropped
        return dropped


def _size(record: WindowRecord | EventRecord) -> int:
    return len(record.to_json())
