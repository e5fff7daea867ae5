"""Still scenes seen by a camera that pans and zooms, for the detector gate's tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def textured_scene(seed: int = 1, size: tuple[int, int] = (720, 1296)) -> np.ndarray:
    """A wide, still scene with corners to track: blocks of random grey on a gradient."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 220, (size[0] // 48, size[1] // 48), np.uint8)
    scene = np.kron(blocks, np.ones((48, 48), np.uint8))
    scene = np.clip(scene.astype(int) + np.linspace(0, 30, size[1])[None, :], 0, 255)
    return np.repeat(scene.astype(np.uint8)[..., None], 3, axis=2)


def camera(scene: np.ndarray, x: int, y: int, width: int = 640, height: int = 360) -> np.ndarray:
    """What a camera sees of ``scene`` with its top-left corner at (x, y)."""
    return np.ascontiguousarray(scene[y : y + height, x : x + width])


def zoomed(scene: np.ndarray, centre: tuple[int, int], crop_w: int) -> np.ndarray:
    """A 640x360 view of ``scene``: a crop ``crop_w`` wide around ``centre``, resized."""
    crop_h = round(crop_w * 9 / 16)
    x0, y0 = centre[0] - crop_w // 2, centre[1] - crop_h // 2
    crop = Image.fromarray(scene[y0 : y0 + crop_h, x0 : x0 + crop_w])
    return np.asarray(crop.resize((640, 360), Image.Resampling.BILINEAR))
