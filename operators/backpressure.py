"""Between a live decoder and slower encoders: bounded queues with a documented policy.

``FramePolicy`` (for frames, which can be sampled less without losing meaning):

- ``drop_oldest`` (default): when the queue is full the oldest waiting frame is dropped, so
  what gets encoded is always the newest picture: the effective frame rate falls, latency
  does not grow.
- ``drop_newest``: the arriving frame is dropped; keeps the earliest frames of a burst.
- ``block``: the decoder waits; nothing is dropped, lag grows, and a live socket's own
  buffers overflow instead (upstream loss). Only sensible for files paced in real time.

Audio is never dropped: its queue blocks the decoder when full (a transcript with holes is
worse than a late one), which bounds memory all the same. Everything else (subtitles,
stream states, warnings) is small and rides with the audio queue's order guarantees.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mmlm_stream.config.live import FramePolicy
from mmlm_stream.records.channels import AudioChunk, ChannelItem, Frame


@dataclass
class QueueStats:
    frames_in: int = 0
    frames_dropped: int = 0
    audio_in: int = 0
    blocked_s: float = 0.0


class LiveQueue:
    """Frames and everything else in two bounded queues, read back in arrival order.

    ``get`` returns the oldest waiting item across both queues (by arrival sequence), so
    dropping frames never reorders what remains.
    """

    def __init__(
        self,
        max_frames: int = 8,
        max_other: int = 64,
        policy: FramePolicy = FramePolicy.DROP_OLDEST,
    ) -> None:
        self.max_frames = max_frames
        self.max_other = max_other
        self.policy = policy
        self.stats = QueueStats()
        self._frames: deque[tuple[int, Frame]] = deque()
        self._other: deque[tuple[int, ChannelItem | None]] = deque()
        self._seq = 0
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames) + len(self._other)

    def put(self, item: ChannelItem) -> None:
        with self._cond:
            self._seq += 1
            if isinstance(item, Frame):
                self._put_frame(item)
            else:
                if isinstance(item, AudioChunk):
                    self.stats.audio_in += 1
                waited = self._wait_for(lambda: len(self._other) < self.max_other)
                self.stats.blocked_s += waited
                self._other.append((self._seq, item))
            self._cond.notify_all()

    def _put_frame(self, frame: Frame) -> None:
        self.stats.frames_in += 1
        if len(self._frames) >= self.max_frames:
            if self.policy is FramePolicy.DROP_OLDEST:
                self._frames.popleft()
                self.stats.frames_dropped += 1
            elif self.policy is FramePolicy.DROP_NEWEST:
                self.stats.frames_dropped += 1
                return
            else:
                self.stats.blocked_s += self._wait_for(lambda: len(self._frames) < self.max_frames)
        self._frames.append((self._seq, frame))

    def _wait_for(self, ready: Callable[[], bool]) -> float:
        started = time.monotonic()
        while not ready() and not self._closed:
            self._cond.wait(0.1)
        return time.monotonic() - started

    def close(self) -> None:
        """No more items: ``get`` returns None once the queues are empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self) -> ChannelItem | None:
        with self._cond:
            while not self._frames and not self._other:
                if self._closed:
                    return None
                self._cond.wait(0.1)
            if self._frames and (not self._other or self._frames[0][0] < self._other[0][0]):
                item: ChannelItem | None = self._frames.popleft()[1]
            else:
                item = self._other.popleft()[1]
            self._cond.notify_all()
            return item
