"""Math libraries keep to the CPUs a process was given (``mmlm_stream.util.threads``)."""

from __future__ import annotations

import subprocess
import sys


def _printed(script: str) -> list[int]:
    """What a fresh interpreter running ``script`` prints, as integers (cv2 state is global)."""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return [int(word) for word in out.stdout.split()]


def test_opencv_keeps_to_the_thread_count_set_for_the_process():
    before, after = _printed(
        "import cv2\n"
        "from mmlm_stream.util.threads import limit_threads\n"
        "before = cv2.getNumThreads()\n"
        "limit_threads(1)\n"
        "print(before, cv2.getNumThreads())\n"
    )
    assert after == 1
    assert before >= 1


def test_the_camera_motion_gate_sets_opencv_threads_when_imported():
    assert _printed(
        "import os\n"
        "os.environ['OMP_NUM_THREADS'] = '1'\n"
        "import cv2\n"
        "cv2.setNumThreads(4)\n"
        "import mmlm_stream.operators.camera_motion\n"
        "print(cv2.getNumThreads())\n"
    ) == [1]
