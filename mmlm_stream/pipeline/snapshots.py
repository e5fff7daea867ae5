"""Snapshots: a JPEG per event of the frame where its condition was strongest.

The analysis keeps the last ``snapshots.keep_s`` media seconds of decoded frames with their
detections (``FrameMemory``). When an event is first handed out, the frame is chosen among
those inside the event's span (a second either side): the one where a detection of the
event's label scored highest, else (sounds, speech, queries) the frame nearest the event's
start. Boxes of that frame's detections are drawn (the event's label in red, the others in
grey) and the media time (and wall time for live sources) is burned in. The file is
``<dir>/<source-hash>/<event-hash>.jpg``; the event's ``snapshot`` field is its id, served at
``GET /events/{id}/snapshot.jpg``. A later session of a live stream that reuses an event id
replaces the earlier snapshot.

With ``clips.enabled`` a live event also gets ``<event-hash>.mp4`` (``operators/clip_ring.py``,
``clip`` field, ``GET /events/{id}/clip.mp4``), written once ``clips.after_s`` of the stream
has passed. Retention (``SnapshotStore.sweep``, both kinds, at most every 30 s while
writing): files older than ``max_age_s`` are deleted, then the oldest until the total is
under ``max_total_mb``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmlm_stream.config.snapshots import SnapshotsConfig
from mmlm_stream.operators.clip_ring import ClipRing
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.results import Detection, DetectionResult
from mmlm_stream.records.schema import EventRecord

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 30.0
JPEG, MP4 = ".jpg", ".mp4"
_MARGIN_S = 1.0


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SnapshotStore:
    """JPEG files under ``dir``; safe for several writers and readers (atomic renames)."""

    def __init__(self, config: SnapshotsConfig) -> None:
        self.config = config
        self.root = config.folder()
        self._swept = 0.0
        self._lock = threading.Lock()

    def path(self, event_id: str, suffix: str = JPEG) -> Path:
        """Where the snapshot (or clip) of ``event_id`` is or would be; ids never become
        paths."""
        source = event_id.split(":", 1)[0]
        return self.root / _digest(source) / f"{_digest(event_id)}{suffix}"

    def read(self, event_id: str, suffix: str = JPEG) -> bytes | None:
        try:
            return self.path(event_id, suffix).read_bytes()
        except OSError:
            return None

    def write_clip(self, event_id: str, mp4: bytes) -> Path:
        return self.write(event_id, mp4, MP4)

    def write(self, event_id: str, jpeg: bytes, suffix: str = JPEG) -> Path:
        target = self.path(event_id, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        partial.write_bytes(jpeg)
        partial.replace(target)
        if time.monotonic() - self._swept >= SWEEP_EVERY_S:
            self.sweep()
        return target

    def sweep(self, now: float | None = None) -> int:
        """Apply the retention rules of the module docstring; returns how many were deleted."""
        with self._lock:
            self._swept = time.monotonic()
            now = time.time() if now is None else now
            files = []
            for path in [*self.root.glob(f"*/*{JPEG}"), *self.root.glob(f"*/*{MP4}")]:
                try:
                    stat = path.stat()
                except OSError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
            files.sort()
            total = sum(size for _, size, _ in files)
            limit = self.config.max_total_mb * 1024 * 1024
            deleted = 0
            for mtime, size, path in files:
                if now - mtime <= self.config.max_age_s and total <= limit:
                    break
                try:
                    path.unlink()
                except OSError:
                    continue
                total -= size
                deleted += 1
            return deleted


@dataclass(frozen=True)
class Remembered:
    frame: Frame
    detections: tuple[Detection, ...] = ()


class FrameMemory:
    """The last ``keep_s`` media seconds of one source's frames and their detections."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._frames: deque[Remembered] = deque()
        self._detections: dict[float, tuple[Detection, ...]] = {}

    def add(self, frames: Sequence[Frame], detections: Iterable[DetectionResult] = ()) -> None:
        found = {round(r.time, 6): r.detections for r in detections}
        for frame in frames:
            self._frames.append(Remembered(frame, found.get(round(frame.time, 6), ())))
        if self._frames:
            newest = self._frames[-1].frame.time
            while self._frames and self._frames[0].frame.time < newest - self.keep_s:
                self._frames.popleft()

    def best(self, event: EventRecord) -> Remembered | None:
        """The frame of the module docstring's rule, or None when none is near the event."""
        start, end = event.start - _MARGIN_S, max(event.end, event.start) + _MARGIN_S
        near = [m for m in self._frames if start <= m.frame.time <= end]
        if not near:
            return None
        wanted = _labels_of(event)

        def strength(m: Remembered) -> float:
            return max((d.score for d in m.detections if d.label in wanted), default=-1.0)

        strongest = max(near, key=strength)
        if strength(strongest) >= 0:
            return strongest
        return min(near, key=lambda m: abs(m.frame.time - event.start))


def _labels_of(event: EventRecord) -> set[str]:
    labels = {event.key}
    objects = event.evidence.get("objects")
    if isinstance(objects, dict):
        for item in objects.get("labels", []):
            if isinstance(item, dict) and isinstance(item.get("label"), str):
                labels.add(item["label"])
    return labels


def render(shot: Remembered, event: EventRecord, quality: int) -> bytes:
    """The frame as JPEG with its boxes and the time burned in."""
    image = Image.fromarray(shot.frame.image, "RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    wanted = _labels_of(event)
    font = ImageFont.load_default(size=max(10, height // 22))
    for d in shot.detections:
        x0, y0, x1, y1 = (d.box[0] * width, d.box[1] * height, d.box[2] * width, d.box[3] * height)
        colour = (230, 40, 40) if d.label in wanted else (170, 170, 170)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=max(2, width // 200))
        caption = f"{d.label} {d.score:.2f}"
        draw.text((x0 + 3, max(0, y0 - font.size - 2)), caption, fill=colour, font=font)
    stamp = f"{event.source}  t={shot.frame.time:.1f}s"
    if event.wall_start:
        stamp += f"  {event.wall_start[:19].replace('T', ' ')} UTC"
    box = draw.textbbox((0, 0), stamp, font=font)
    draw.rectangle((0, height - box[3] - 6, box[2] + 8, height), fill=(0, 0, 0))
    draw.text((4, height - box[3] - 3), stamp, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


class Snapshots:
    """Attaches snapshots (and clips, with ``clips``) to one source's events as the analysis
    hands them out."""

    def __init__(
        self,
        config: SnapshotsConfig,
        store: SnapshotStore | None = None,
        clips: ClipRing | None = None,
    ) -> None:
        self.config = config
        self.store = store or SnapshotStore(config)
        self.clips = clips
        self.memory = FrameMemory(config.keep_s)
        self._taken: dict[str, bool] = {}  # event id -> whether a snapshot was written
        self._failing = False

    def remember(self, frames: Sequence[Frame], detections: Iterable[DetectionResult]) -> None:
        self.memory.add(frames, detections)

    def attach(self, events: Iterable[EventRecord]) -> None:
        """Set ``snapshot`` (and ``clip``) on each event: taken at its first version, the
        same reference on the versions after it."""
        for event in events:
            if event.type == "stream":
                continue
            if event.id not in self._taken:
                self._taken[event.id] = self._shoot(event)
                if len(self._taken) > 4096:
                    self._taken.pop(next(iter(self._taken)))
                if self.clips is not None:
                    self.clips.request(event.id, event.start)
            if self._taken.get(event.id):
                event.snapshot = event.id
            if self.clips is not None:
                event.clip = event.id

    def _shoot(self, event: EventRecord) -> bool:
        if not self.config.enabled:
            return False
        shot = self.memory.best(event)
        if shot is None:
            return False
        try:
            self.store.write(event.id, render(shot, event, self.config.quality))
        except OSError as exc:
            if not self._failing:
                logger.warning("snapshots: cannot write to %s (%s)", self.store.root, exc)
                self._failing = True
            return False
        self._failing = False
        return True
