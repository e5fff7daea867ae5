"""Assign encoder results to sliding or tumbling windows of media time, and close them.

Window k covers ``[k*hop, k*hop + window)``. An instant (a frame) lands in every window
that covers it; an interval (an audio chunk, a transcript segment, a cue) in every window
it overlaps. A window closes once every enabled channel's watermark has passed its end, or,
with ``max_lateness_s`` set (live sources), once that much wall time has passed since the
first channel got there. Windows close strictly in order and at most once; anything that
arrives for a closed window is counted and dropped.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime

from mmlm_stream.evidence import Channel, Evidence, WindowContents, span_of

_EPS = 1e-9


class Windower:
    """Windowing state of one source. Not thread-safe: one caller per source."""

    def __init__(
        self,
        source: str,
        channels: Iterable[Channel],
        window_s: float = 4.0,
        hop_s: float = 2.0,
        max_lateness_s: float | None = None,
        wall_of: Callable[[float], datetime | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or hop_s <= 0 or hop_s > window_s:
            raise ValueError("need 0 < hop_s <= window_s")
        self.source = source
        self.channels = frozenset(channels)
        if not self.channels:
            raise ValueError("at least one channel must be enabled")
        self.window_s = window_s
        self.hop_s = hop_s
        self.max_lateness_s = max_lateness_s
        self.wall_of = wall_of
        self.clock = clock
        self.late_dropped: Counter[Channel] = Counter()
        self._watermark: dict[Channel, float] = dict.fromkeys(self.channels, -math.inf)
        self._open: dict[int, dict[Channel, list[Evidence]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._reached_at: dict[int, float] = {}
        self._next = 0
        self._last = -1

    def start_of(self, k: int) -> float:
        return round(k * self.hop_s, 9)

    def end_of(self, k: int) -> float:
        return round(k * self.hop_s + self.window_s, 9)

    @property
    def next_start(self) -> float:
        """Start of the next window to close; earlier media time is settled."""
        return self.start_of(self._next)

    def _windows_for(self, start: float, end: float) -> range:
        if end - start <= _EPS:  # an instant: start_k <= t < end_k
            first = math.floor((start - self.window_s) / self.hop_s + _EPS) + 1
            last = math.floor(start / self.hop_s + _EPS)
        else:  # an interval: start_k < end and end_k > start
            first = math.floor((start - self.window_s) / self.hop_s + _EPS) + 1
            last = math.ceil(end / self.hop_s - _EPS) - 1
        return range(max(first, 0), last + 1)

    def add(self, channel: Channel, item: Evidence) -> None:
        """Put ``item`` into every open window it belongs to; also advances the watermark."""
        start, end = span_of(item)
        windows = self._windows_for(start, end)
        if windows and windows.start < self._next:
            self.late_dropped[channel] += 1
        for k in windows:
            if k >= self._next:
                self._open[k][channel].append(item)
        if windows:
            self._last = max(self._last, windows[-1])
        self.advance(channel, start)

    def advance(self, channel: Channel, media_time: float) -> None:
        """``channel`` has delivered everything before ``media_time``."""
        if channel not in self._watermark:
            raise KeyError(f"channel {channel} is not enabled for {self.source}")
        if media_time > self._watermark[channel]:
            self._watermark[channel] = media_time
        fastest = max(self._watermark.values())
        k = self._next
        now = None
        while self.end_of(k) <= fastest + _EPS:
            if k not in self._reached_at:
                now = self.clock() if now is None else now
                self._reached_at[k] = now
            k += 1

    def ready(self) -> list[WindowContents]:
        """Windows that can close now, in order."""
        closed = []
        slowest = min(self._watermark.values())
        now = self.clock()
        while True:
            k = self._next
            end = self.end_of(k)
            by_watermark = slowest + _EPS >= end
            reached = self._reached_at.get(k)
            by_lateness = (
                self.max_lateness_s is not None
                and reached is not None
                and now - reached >= self.max_lateness_s
            )
            if not (by_watermark or by_lateness):
                return closed
            closed.append(self._close(k))

    def finish(self) -> list[WindowContents]:
        """End of stream: close every remaining window up to the last one holding an item."""
        return [self._close(self._next) for _ in range(self._next, self._last + 1)]

    def _close(self, k: int) -> WindowContents:
        end = self.end_of(k)
        buckets = self._open.pop(k, {})
        self._reached_at.pop(k, None)
        self._next = k + 1
        items = {
            channel: tuple(sorted(found, key=_order_key))
            for channel, found in buckets.items()
            if found
        }
        start = self.start_of(k)
        # A channel is present if it has items here or its watermark got into the window;
        # one that lagged (closed by lateness) or had ended is reported absent.
        present = {c for c in self.channels if self._watermark[c] > start + _EPS} | set(items)
        return WindowContents(
            source=self.source,
            start=start,
            end=end,
            items=items,
            present=frozenset(present),
            wall_start=self.wall_of(start) if self.wall_of else None,
        )


def _order_key(item: Evidence) -> tuple[float, float, str]:
    start, end = span_of(item)
    return (start, end, str(getattr(item, "text", "")))
