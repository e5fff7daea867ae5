"""Assign encoder results to sliding or tumbling windows of media time, and close them.

Window k covers ``[k*hop, k*hop + window)``. An instant (a frame) lands in every window
that covers it; an interval (an audio chunk, a transcript segment, a cue) in every window
it overlaps. A window closes once every enabled channel's watermark has passed its end, or,
with ``max_lateness_s`` set (live sources), once that much wall time has passed since the
first channel got there. Windows close strictly in order and at most once; anything that
arrives for a closed window is counted and dropped.

Channels named ``deferred`` (live: speech, whose transcripts come seconds after the audio)
may lag: ``ready_early`` hands out a snapshot of each window once the other channels are
complete, so events that do not need the deferred channels go out before the window closes.
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
        deferred: Iterable[Channel] = (),
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
        self.deferred = frozenset(deferred) & self.channels
        self.late_dropped: Counter[Channel] = Counter()
        self._watermark: dict[Channel, float] = dict.fromkeys(self.channels, -math.inf)
        self._open: dict[int, dict[Channel, list[Evidence]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._reached_at: dict[int, float] = {}
        self._next = 0
        self._next_early = 0
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
        while self._due(self._next, slowest, now):
            closed.append(self._close(self._next))
        return closed

    def ready_early(self) -> list[WindowContents]:
        """Snapshots, once each and in order, of open windows whose channels other than the
        deferred ones are complete; empty when nothing is deferred."""
        if not self.deferred:
            return []
        early = [w for c, w in self._watermark.items() if c not in self.deferred]
        slowest = min(early, default=math.inf)
        now = self.clock()
        snapshots = []
        k = max(self._next_early, self._next)
        while self._due(k, slowest, now):
            snapshots.append(self._contents(k, self._open.get(k, {})))
            k += 1
        self._next_early = k
        return snapshots

    def _due(self, k: int, slowest: float, now: float) -> bool:
        if slowest + _EPS >= self.end_of(k):
            return True
        reached = self._reached_at.get(k)
        return (
            self.max_lateness_s is not None
            and reached is not None
            and now - reached >= self.max_lateness_s
        )

    def finish(self) -> list[WindowContents]:
        """End of stream: close every remaining window up to the last one holding an item."""
        return [self._close(self._next) for _ in range(self._next, self._last + 1)]

    def _close(self, k: int) -> WindowContents:
        buckets = self._open.pop(k, {})
        self._reached_at.pop(k, None)
        self._next = k + 1
        return self._contents(k, buckets)

    def _contents(self, k: int, buckets: dict[Channel, list[Evidence]]) -> WindowContents:
        end = self.end_of(k)
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
