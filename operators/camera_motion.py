"""How the whole picture moved between two frames (pan, tilt, zoom), and what is left over.

A camera that pans or zooms changes every pixel, although nothing in the scene moved; a
detector gated on pixel change would then run on every frame and still get boxes that lag the
picture. Here the camera's motion is estimated as one similarity transform (scale, rotation,
shift) from ORB corners matched with RANSAC, as trackers compensate camera motion (BoT-SORT's
CMC); the scene's own change is what remains after the earlier frame is moved onto the later
one, and earlier boxes can be moved the same way. With too few corners that agree (a cut, a
blank wall) there is no estimate and the frames are compared as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mmlm_stream.util.threads import limit_opencv

limit_opencv()  # the gate runs in every decoding process, beside the decoder's threads

WIDTH = 256
"""Width of the grey image motion is estimated on: enough corners on a 640x360 scene, ~3 ms."""
THUMBNAIL = (32, 32)
CHANGED_LEVEL = 16
"""A thumbnail pixel counts as changed when its grey level moved by more than this (0-255):
above compression noise and flicker, below any object entering the picture."""
MIN_INLIERS = 20
"""Corner matches that must agree on one transform before the camera counts as moving; a cut
leaves a handful of chance matches."""
MIN_INLIER_FRACTION = 0.25

_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class View:
    """A frame as motion is measured on it: a small grey image and its ORB corners."""

    grey: np.ndarray
    points: np.ndarray
    descriptors: np.ndarray | None

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.grey.shape
        return width, height


@dataclass(frozen=True)
class CameraMotion:
    """The similarity transform from an earlier view to a later one, and its consequences.

    ``matrix`` maps fractions of the earlier frame's width/height to the later one's;
    ``changed`` is the fraction of the later thumbnail, where the earlier frame covers it,
    that still differs after the camera's motion is taken out; ``uncovered`` the fraction of
    the later frame the earlier one does not show (scene panned or zoomed into view).
    """

    matrix: np.ndarray = field(default_factory=lambda: _IDENTITY.copy())
    changed: float = 0.0
    uncovered: float = 0.0
    scale: float = 1.0
    """Zoom factor (> 1: zoomed in)."""
    estimated: bool = False

    def move_box(
        self, box: tuple[float, float, float, float], min_visible: float = 0.5
    ) -> tuple[float, float, float, float] | None:
        """Where a box (x0, y0, x1, y1 fractions) of the earlier frame is in the later one;
        None when less than ``min_visible`` of it is still in the picture."""
        x0, y0, x1, y1 = box
        corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])
        moved = corners @ self.matrix.T
        nx0, ny0 = moved.min(axis=0)
        nx1, ny1 = moved.max(axis=0)
        area = (nx1 - nx0) * (ny1 - ny0)
        cx0, cy0, cx1, cy1 = max(nx0, 0.0), max(ny0, 0.0), min(nx1, 1.0), min(ny1, 1.0)
        if area <= 0 or cx1 <= cx0 or cy1 <= cy0:
            return None
        if (cx1 - cx0) * (cy1 - cy0) < min_visible * area:
            return None
        return (float(cx0), float(cy0), float(cx1), float(cy1))


def view(image: np.ndarray) -> View:
    """The view of an RGB (or grey) frame."""
    image = np.ascontiguousarray(image, np.uint8)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    size = (WIDTH, max(1, round(height * WIDTH / width)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    # One ORB per call: OpenCV's detectors are not safe to share between threads.
    orb = cv2.ORB_create(nfeatures=300, fastThreshold=10)
    keypoints, descriptors = orb.detectAndCompute(small, None)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return View(small, points, descriptors)


def _similarity(earlier: View, later: View) -> np.ndarray | None:
    """The pixel transform earlier -> later, when enough matched corners agree on one."""
    if earlier.descriptors is None or later.descriptors is None:
        return None
    if min(len(earlier.points), len(later.points)) < MIN_INLIERS:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(
        earlier.descriptors, later.descriptors
    )
    if len(matches) < MIN_INLIERS:
        return None
    src = earlier.points[[m.queryIdx for m in matches]]
    dst = later.points[[m.trainIdx for m in matches]]
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0
    )
    if matrix is None or inliers is None:
        return None
    agreeing = int(inliers.sum())
    if agreeing < MIN_INLIERS or agreeing < MIN_INLIER_FRACTION * len(matches):
        return None
    return matrix


def _thumb(grey: np.ndarray) -> np.ndarray:
    return cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.int16)


def measure(earlier: View, later: View) -> CameraMotion:
    """The camera's motion from ``earlier`` to ``later`` and the change left over."""
    width, height = later.size
    pixels = _similarity(earlier, later) if earlier.size == later.size else None
    if pixels is None:
        if earlier.size != later.size:
            return CameraMotion(changed=1.0, uncovered=1.0)
        diff = np.abs(_thumb(later.grey) - _thumb(earlier.grey)) > CHANGED_LEVEL
        return CameraMotion(changed=float(diff.mean()))
    warped = cv2.warpAffine(earlier.grey, pixels, (width, height), flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(
        np.full_like(earlier.grey, 255), pixels, (width, height), flags=cv2.INTER_NEAREST
    )
    full = _thumb(covered) == 255
    diff = (np.abs(_thumb(later.grey) - _thumb(warped)) > CHANGED_LEVEL) & full
    changed = float(diff.sum() / full.sum()) if full.any() else 1.0
    to_pixels = np.diag([width, height, 1.0])
    from_pixels = np.diag([1 / width, 1 / height])
    matrix = from_pixels @ pixels @ to_pixels
    uncovered = float(1.0 - (covered > 0).mean())
    scale = float(np.hypot(pixels[0, 0], pixels[1, 0]))
    return CameraMotion(matrix, changed, uncovered, scale, estimated=True)
