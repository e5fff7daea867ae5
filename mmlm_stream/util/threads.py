"""Keep math libraries to the CPUs a process was given.

Several model processes on a few cores each spawning one thread per core oversubscribe
the machine; measured here, torch ran 10-20x slower that way.
"""

from __future__ import annotations

import os
import sys


def limit_threads(count: int | None = None) -> int:
    """Set torch/OpenMP/BLAS threads to ``count`` (default: this Ray worker's CPUs, else 1)."""
    if count is None:
        count = 1
        try:
            import ray

            if ray.is_initialized():
                resources = ray.get_runtime_context().get_assigned_resources()
                count = max(1, int(resources.get("CPU", 1)))
        except Exception:  # outside Ray, or no runtime context: one thread
            count = 1
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(count)
    # Only where torch is already in use: importing it costs ~400 MB PSS per process (the
    # Decoder never needs it), and a torch imported later reads OMP_NUM_THREADS set above.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    if "cv2" in sys.modules:
        limit_opencv()
    return count


def limit_opencv() -> None:
    """OpenCV's own thread pool to the count ``limit_threads`` set (it reads no environment
    variable). Its DNN detector took 126 ms of CPU a frame on two threads against 100 ms on
    one: on a busy machine the second thread only adds cost."""
    import cv2

    cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "1")))
