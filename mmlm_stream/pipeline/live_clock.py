"""When live media happened: the wall-clock time of a live source's media time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mmlm_stream.records.channels import StreamStatus


class LiveClock:
    """Maps live media time to the wall-clock time it happened, per streaming session.

    A session's offset (wall minus media time) starts at its 'streaming' transition and is
    lowered to the smallest ``arrival - media time`` of its items: nothing arrives before it
    happened, and the transition itself comes late, after probing has buffered the first
    seconds. Sessions are kept by their first media time, so windows of an earlier session
    that close after a reconnect keep that session's clock. Written by the decode thread,
    read by the analysis loop.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: list[tuple[float, float]] = []  # (first media time, offset)

    def set(self, status: StreamStatus) -> None:
        with self._lock:
            self._sessions.append((status.time, status.wall.timestamp() - status.time))
            del self._sessions[:-8]

    def observe(self, media_time: float) -> None:
        with self._lock:
            if self._sessions and media_time >= self._sessions[-1][0]:
                start, offset = self._sessions[-1]
                self._sessions[-1] = (start, min(offset, self.clock() - media_time))

    def __call__(self, media_time: float) -> datetime | None:
        with self._lock:
            offset = next(
                (o for start, o in reversed(self._sessions) if start <= media_time),
                self._sessions[0][1] if self._sessions else None,
            )
        if offset is None:
            return None
        return datetime.fromtimestamp(offset + media_time, UTC)
