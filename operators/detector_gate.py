"""Whether one source's frame needs the object detector, and what it gets when not.

The detector is the costliest frame model on CPU; most frames of a camera show what the last
detected one showed, perhaps panned or zoomed. Frigate runs its detector only inside motion
and rechecks stationary objects at an interval; this gate does the same per frame, with the
camera's own motion taken out first (``camera_motion``), so a panning or zooming camera does
not count as a scene that moves, and carried boxes follow the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from mmlm_stream.operators import camera_motion
from mmlm_stream.operators.camera_motion import CameraMotion, View
from mmlm_stream.records.channels import Frame
from mmlm_stream.records.results import Detection, DetectionResult, FrameEncoding

CHANGED_FRACTION = 0.01
"""Changed pixels (of the 32x32 thumbnail, after camera motion) that count as motion: an
object covering one hundredth of the picture, small enough for a person entering at the edge."""
UNCOVERED_FRACTION = 0.1
"""Share of the picture the last detected frame did not show (panned or zoomed out into view)
at which the new part is detected: something may stand there."""
MAX_ZOOM = 1.15
"""Zoom since the last detection (either way) at which boxes are found again rather than
scaled: zooming in makes small, far objects detectable."""
LIVING_SCORE = 0.3
"""Frame-label probability on ImageNet's animals and people at which one counts as present
(the COCO detector finds people and animals; ImageNet has no person)."""


class Reason(StrEnum):
    """Why the detector ran on a frame (``carried`` when it did not)."""

    FIRST = "first"
    REFRESH = "refresh"
    LIVING = "living"
    MOTION = "motion"
    UNCOVERED = "uncovered"
    ZOOM = "zoom"
    CARRIED = "carried"


@dataclass(frozen=True)
class Judgement:
    """The gate's answer for one frame: the reason, and the camera's motion since the
    frame the detector last saw (what carried boxes are moved by)."""

    reason: Reason
    motion: CameraMotion

    @property
    def detect(self) -> bool:
        return self.reason is not Reason.CARRIED

    def carry(self, time: float, detections: tuple[Detection, ...]) -> DetectionResult:
        """``detections`` of the reference frame, moved with the camera, at ``time``."""
        moved = []
        for detection in detections:
            box = self.motion.move_box(detection.box)
            if box is not None:
                moved.append(Detection(detection.label, detection.score, box))
        return DetectionResult(time=time, detections=tuple(moved))


@dataclass
class DetectorGate:
    """The detector's memory for one source.

    A frame due at the detector's rate is detected when (1) the detector has not run on this
    source yet, (2) ``refresh_s`` of media time passed since the last detection (stationary
    objects are rechecked, as Frigate's ``stationary.interval``), (3) an animal or person
    appears in the frame labels (``LIVING_SCORE``) that the last detected frame did not have,
    (4) after the camera's motion is taken out, more than ``CHANGED_FRACTION`` of the thumbnail
    differs from the last detected frame (slow drift adds up, a cut always counts), (5) more
    than ``UNCOVERED_FRACTION`` of the picture was not in that frame, or (6) the camera zoomed
    by ``MAX_ZOOM`` or more. Otherwise it gets the last detections moved with the camera:
    a still scene holds what it held.
    """

    refresh_s: float
    living: frozenset[str] = frozenset()
    _seen: View | None = None
    _seen_living: bool = False
    _last: tuple[Detection, ...] = ()
    _last_time: float = -math.inf

    def _is_living(self, encoding: FrameEncoding | None) -> bool:
        if encoding is None or not self.living:
            return False
        score = sum(label.score for label in encoding.labels if label.label in self.living)
        return score >= LIVING_SCORE

    def judge(self, frame: Frame, encoding: FrameEncoding | None) -> tuple[Judgement, View]:
        """The judgement on ``frame`` and its view (pass both back to ``detected``)."""
        seen = camera_motion.view(frame.image)
        if self._seen is None:
            return Judgement(Reason.FIRST, CameraMotion()), seen
        motion = camera_motion.measure(self._seen, seen)
        if abs(frame.time - self._last_time) >= self.refresh_s:
            reason = Reason.REFRESH
        elif self._is_living(encoding) and not self._seen_living:
            reason = Reason.LIVING
        elif motion.changed > CHANGED_FRACTION:
            reason = Reason.MOTION
        elif motion.uncovered > UNCOVERED_FRACTION:
            reason = Reason.UNCOVERED
        elif abs(math.log(max(motion.scale, 1e-6))) >= math.log(MAX_ZOOM):
            reason = Reason.ZOOM
        else:
            reason = Reason.CARRIED
        return Judgement(reason, motion), seen

    def detected(
        self,
        frame: Frame,
        seen: View,
        encoding: FrameEncoding | None,
        detections: tuple[Detection, ...],
    ) -> None:
        """Make ``frame`` (with its view and labels) the one later frames are judged by."""
        self._seen = seen
        self._seen_living = self._is_living(encoding)
        self._last = detections
        self._last_time = frame.time

    def carried(self, frame: Frame, judgement: Judgement) -> DetectionResult:
        return judgement.carry(frame.time, self._last)
