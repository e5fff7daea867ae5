"""The camera's own motion is told apart from the scene's (``operators.camera_motion``)."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import camera, textured_scene

from mmlm_stream.operators import camera_motion
from mmlm_stream.operators.camera_motion import CameraMotion


def test_a_pan_is_estimated_as_a_shift_with_nothing_left_over():
    scene = textured_scene()
    motion = camera_motion.measure(
        camera_motion.view(camera(scene, 100, 100)), camera_motion.view(camera(scene, 132, 110))
    )
    assert motion.estimated
    assert motion.matrix[:, 2] == pytest.approx((-32 / 640, -10 / 360), abs=0.005)
    assert motion.scale == pytest.approx(1.0, abs=0.01)
    assert motion.changed == 0.0
    assert motion.uncovered == pytest.approx(1 - (608 * 350) / (640 * 360), abs=0.02)


def test_a_cut_to_another_scene_has_no_camera_motion_and_all_of_it_changed():
    motion = camera_motion.measure(
        camera_motion.view(camera(textured_scene(1), 100, 100)),
        camera_motion.view(camera(textured_scene(2), 100, 100)),
    )
    assert not motion.estimated
    assert motion.changed > 0.5


def test_a_blank_picture_is_compared_as_it_is():
    grey = np.full((360, 640, 3), 90, np.uint8)
    darker = grey.copy()
    darker[:180] = 40
    assert camera_motion.measure(camera_motion.view(grey), camera_motion.view(grey)).changed == 0
    motion = camera_motion.measure(camera_motion.view(grey), camera_motion.view(darker))
    assert not motion.estimated and motion.changed == pytest.approx(0.5)


def test_a_box_is_moved_with_the_camera_and_dropped_once_mostly_out_of_the_picture():
    left = CameraMotion(matrix=np.array([[1.0, 0.0, -0.1], [0.0, 1.0, 0.0]]), estimated=True)
    assert left.move_box((0.5, 0.4, 0.6, 0.6)) == pytest.approx((0.4, 0.4, 0.5, 0.6))
    assert left.move_box((0.04, 0.4, 0.14, 0.6)) is None  # 0.04 of its 0.1 width in view
    assert left.move_box((0.0, 0.4, 0.1, 0.6)) is None
    assert left.move_box((0.12, 0.4, 0.22, 0.6)) == pytest.approx((0.02, 0.4, 0.12, 0.6))
