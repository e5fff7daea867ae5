"""Clips of a live stream: a rolling buffer of its encoded packets, cut without re-encoding.

The decoder hands every video and audio packet it demuxes to ``add`` with the packet's media
time. ``request(clip_id, start)`` asks for ``[start - before_s, start + after_s]``; the clip
is written once packets past its end have arrived (or when the connection ends, with what
there is), by copying the packets from the last video keyframe at or before its start into
an MP4 (timestamps moved to start at 0). The copy happens in the decoder's thread while the
container that the packets' streams belong to is still open. Memory is bounded by
``buffer_mb`` and by the time a clip can reach back.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from mmlm_stream.config.clips import ClipsConfig

logger = logging.getLogger(__name__)

_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class _Held:
    time: float
    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    keyframe: bool
    stream: Any  # the input stream (its container is open while this is in the buffer)
    video: bool


class ClipRing:
    def __init__(self, config: ClipsConfig, deliver: Callable[[str, bytes], None]) -> None:
        self.config = config
        self.deliver = deliver
        self._held: deque[_Held] = deque()
        self._bytes = 0
        self._pending: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self.written = 0

    def start_session(self) -> None:
        """A new connection: the packets of the old one belong to a closed container."""
        with self._lock:
            self._held.clear()
            self._bytes = 0

    def add(self, packet: av.Packet, time: float) -> None:
        if packet.size == 0 or packet.time_base is None:
            return
        held = _Held(
            time,
            bytes(packet),
            packet.pts,
            packet.dts,
            packet.time_base,
            bool(packet.is_keyframe),
            packet.stream,
            packet.stream.type == "video",
        )
        with self._lock:
            self._held.append(held)
            self._bytes += len(held.data)
            reach = self.config.before_s + self.config.after_s + _SLACK_S
            limit = self.config.buffer_mb * 1024 * 1024
            while self._held and (self._bytes > limit or self._held[0].time < time - reach):
                self._bytes -= len(self._held.popleft().data)
            due = [(i, s) for i, s in self._pending if time >= s + self.config.after_s]
            self._pending = [p for p in self._pending if p not in due]
        for clip_id, start in due:
            self._write(clip_id, start)

    def request(self, clip_id: str, start: float) -> None:
        with self._lock:
            if all(clip_id != pending for pending, _ in self._pending):
                self._pending.append((clip_id, start))

    def end_session(self) -> None:
        """Write what is pending with the packets there are (the connection ends)."""
        with self._lock:
            due, self._pending = self._pending, []
        for clip_id, start in due:
            self._write(clip_id, start)

    def _cut(self, start: float) -> list[_Held]:
        begin, end = start - self.config.before_s, start + self.config.after_s
        with self._lock:
            held = list(self._held)
        if any(h.video for h in held):
            keys = [i for i, h in enumerate(held) if h.video and h.keyframe]
            if not keys:
                return []
            before = [i for i in keys if held[i].time <= begin]
            first = before[-1] if before else keys[0]
        else:
            first = next((i for i, h in enumerate(held) if h.time >= begin), len(held))
        return [h for h in held[first:] if h.time <= end]

    def _write(self, clip_id: str, start: float) -> None:
        packets = self._cut(start)
        if not packets:
            logger.info("clips: nothing buffered for %s", clip_id)
            return
        try:
            data = _remux(packets)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            logger.warning("clips: %s could not be written: %s", clip_id, exc)
            return
        try:
            self.deliver(clip_id, data)
        except OSError as exc:
            logger.warning("clips: %s could not be stored: %s", clip_id, exc)
            return
        self.written += 1


def _remux(packets: list[_Held]) -> bytes:
    out_file = io.BytesIO()
    base_s = min(float((h.dts if h.dts is not None else h.pts or 0) * h.time_base) for h in packets)
    with av.open(out_file, "w", format="mp4") as out:
        streams: dict[int, Any] = {}
        for h in packets:
            if h.stream.index not in streams:
                streams[h.stream.index] = out.add_stream_from_template(h.stream)
        for h in packets:
            shift = round(base_s / h.time_base)
            packet = av.Packet(h.data)
            packet.time_base = h.time_base
            packet.pts = None if h.pts is None else h.pts - shift
            packet.dts = None if h.dts is None else h.dts - shift
            packet.is_keyframe = h.keyframe
            packet.stream = streams[h.stream.index]
            out.mux(packet)
    return out_file.getvalue()
