"""Merge the channels of one source into a single stream ordered by media time."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

from mmlm_stream.records.channels import ChannelItem


class TimeOrderer:
    """Holds items back until every open channel has moved past them (a watermark).

    Containers interleave streams only roughly, and an audio chunk is complete only a
    chunk-length after it starts, so frames would otherwise overtake audio. ``limit``
    bounds memory on badly interleaved files: past it, the earliest item goes out anyway.
    """

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._heap: list[tuple[float, int, ChannelItem]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, items: Iterable[ChannelItem]) -> None:
        for item in items:
            heapq.heappush(self._heap, (item.sort_time, next(self._seq), item))

    def pop_ready(self, watermark: float | None) -> list[ChannelItem]:
        """Items at or before ``watermark`` (None: no channel constrains, release all)."""
        ready = []
        while self._heap and (
            watermark is None or self._heap[0][0] <= watermark or len(self._heap) > self.limit
        ):
            ready.append(heapq.heappop(self._heap)[2])
        return ready

    def drain(self) -> list[ChannelItem]:
        return self.pop_ready(None)
