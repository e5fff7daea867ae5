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

Gaps cost nothing: a run of windows holding no item that covers more than ``max_gap_s`` is
skipped in one step (a live source back after an outage, a timestamp jump), and an item
lands in the windows within ``max_gap_s`` of its start only (a cue claiming to last a day).
Work and memory per item are bounded by the windows it really covers, never by media time.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import datetime

from mmlm_stream.records.evidence import Evidence, WindowContents, span_of
from mmlm_stream.records.modality import Modality

_EPS = 1e-9


class Windower:
    """Windowing state of one source. Not thread-safe: one caller per source."""

    def __init__(
        self,
        source: str,
        channels: Iterable[Modality],
        window_s: float = 4.0,
        hop_s: float = 2.0,
        max_lateness_s: float | None = None,
        wall_of: Callable[[float], datetime | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        deferred: Iterable[Modality] = (),
        max_gap_s: float = 60.0,
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
        self.max_gap_s = max_gap_s
        self.skipped_windows = 0
        self.late_dropped: Counter[Modality] = Counter()
        self._watermark: dict[Modality, float] = dict.fromkeys(self.channels, -math.inf)
        self._open: dict[int, dict[Modality, list[Evidence]]] = defaultdict(
            lambda: defaultdict(list)
        )
        # When the fastest channel passed each window's end: (last window passed, wall time)
        # per advance that passed a new one, oldest first; one entry covers a whole gap.
        self._reached: deque[tuple[int, float]] = deque()
        self._reached_last = -1
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
            end = min(end, start + self.max_gap_s)
            first = math.floor((start - self.window_s) / self.hop_s + _EPS) + 1
            last = math.ceil(end / self.hop_s - _EPS) - 1
        return range(max(first, 0), last + 1)

    def _last_ending_by(self, media_time: float) -> int:
        """The last window whose end is at or before ``media_time`` (-1: none)."""
        k = math.floor((media_time - self.window_s) / self.hop_s)
        while self.end_of(k + 1) <= media_time + _EPS:
            k += 1
        while k >= 0 and self.end_of(k) > media_time + _EPS:
            k -= 1
        return max(k, -1)

    def add(self, channel: Modality, item: Evidence) -> None:
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

    def advance(self, channel: Modality, media_time: float) -> None:
        """``channel`` has delivered everything before ``media_time``."""
        if channel not in self._watermark:
            raise KeyError(f"channel {channel} is not enabled for {self.source}")
        if media_time > self._watermark[channel]:
            self._watermark[channel] = media_time
        fastest = max(self._watermark.values())
        if not math.isfinite(fastest):
            return
        last = self._last_ending_by(fastest)
        if last > self._reached_last:
            self._reached.append((last, self.clock()))
            self._reached_last = last

    def _reached_at(self, k: int) -> float | None:
        """Wall time at which the fastest channel passed the end of window ``k``."""
        for last, when in self._reached:
            if last >= k:
                return when
        return None

    def ready(self) -> list[WindowContents]:
        """Windows that can close now, in order."""
        closed = []
        slowest = min(self._watermark.values())
        now = self.clock()
        settled = self._settled(slowest, now)
        while True:
            self._skip_to(self._gap_end(self._next, settled))
            if not self._due(self._next, slowest, now):
                return closed
            closed.append(self._close(self._next))

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
        settled = self._settled(slowest, now)
        while True:
            k = self._gap_end(k, settled)
            if not self._due(k, slowest, now):
                break
            snapshots.append(self._contents(k, self._open.get(k, {})))
            k += 1
        self._next_early = k
        return snapshots

    def _settled(self, slowest: float, now: float) -> int:
        """The last window no item can reach any more: the slowest channel passed its end,
        or (live) it is ``max_lateness_s`` overdue."""
        if math.isfinite(slowest):
            last = self._last_ending_by(slowest)
        else:
            last = self._last if slowest > 0 else -1
        if self.max_lateness_s is not None:
            for reached, when in self._reached:
                if now - when < self.max_lateness_s:
                    break
                last = max(last, reached)
        return last

    def _gap_end(self, k: int, settled: int) -> int:
        """Where to go on from window ``k``: past the settled windows holding no item from
        ``k`` on when they cover more than ``max_gap_s``, else ``k`` itself."""
        if any(self._open.get(k, {}).values()):
            return k
        holding = (j for j, buckets in self._open.items() if j > k and any(buckets.values()))
        until = min(min(holding, default=settled + 1), settled + 1)
        return until if (until - k) * self.hop_s > self.max_gap_s else k

    def _skip_to(self, k: int) -> None:
        if k <= self._next:
            return
        for j in [j for j in self._open if j < k]:
            del self._open[j]
        self.skipped_windows += k - self._next
        self._next = k
        self._forget_reached()

    def _due(self, k: int, slowest: float, now: float) -> bool:
        if slowest + _EPS >= self.end_of(k):
            return True
        reached = self._reached_at(k)
        return (
            self.max_lateness_s is not None
            and reached is not None
            and now - reached >= self.max_lateness_s
        )

    def finish(self) -> list[WindowContents]:
        """End of stream: close every remaining window up to the last one holding an item."""
        closed = []
        while True:
            self._skip_to(self._gap_end(self._next, self._last))
            if self._next > self._last:
                return closed
            closed.append(self._close(self._next))

    def _close(self, k: int) -> WindowContents:
        buckets = self._open.pop(k, {})
        self._next = k + 1
        self._forget_reached()
        return self._contents(k, buckets)

    def _forget_reached(self) -> None:
        while self._reached and self._reached[0][0] < self._next:
            self._reached.popleft()

    def _contents(self, k: int, buckets: dict[Modality, list[Evidence]]) -> WindowContents:
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
