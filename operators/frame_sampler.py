"""Pick frames by presentation time and downscale only the ones picked."""

from __future__ import annotations

import math

import av
import numpy as np

_EPS = 1e-6


def output_size(
    width: int, height: int, short_side: int, exact: tuple[int, int] | None
) -> tuple[int, int]:
    """Frame size after downscaling: exact when given, else short side capped, never upscaled."""
    if exact is not None:
        return exact
    short = min(width, height)
    if short <= short_side:
        return width, height
    scale = short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


class FrameSampler:
    """Selects the first frame at or after each multiple of 1/fps of media time.

    The very first frame is always taken (it is the first at or after the grid point below
    it, even when a stream starts a little after zero). Targets are fixed on the grid, so
    sampling does not drift with variable frame rate and a sampled frame is within one frame
    interval of its target. ``fps == 0`` keeps every frame.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._next_target: float | None = None

    @property
    def next_target(self) -> float | None:
        """Media time the next wanted frame is at or after (None: any next frame)."""
        return self._next_target if self.fps > 0 else None

    def wants(self, time: float) -> bool:
        if self.fps <= 0:
            return True
        if self._next_target is not None and time + _EPS < self._next_target:
            return False
        self._next_target = (math.floor(time * self.fps + _EPS) + 1) / self.fps
        return True


def to_rgb(frame: av.VideoFrame, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Scale and convert in one libswscale call: the full-size RGB frame never exists."""
    width, height = size
    scaled = frame.reformat(width=width, height=height, format="rgb24", interpolation=interpolation)
    return scaled.to_ndarray()
