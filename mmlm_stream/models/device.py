"""Where a model runs: ``auto`` means CUDA when present, half precision there."""

from __future__ import annotations

import functools
import glob
import os
import sys

from mmlm_stream.util.errors import ConfigError

_DTYPES = {"float32", "float16", "bfloat16"}


@functools.cache
def cuda_available() -> bool:
    """Without importing torch (~400 MB per process) where no NVIDIA device node exists."""
    nodes = glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")
    if "torch" not in sys.modules and not nodes:
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not cuda_available():
            raise ConfigError(f"device '{requested}' requested but no CUDA device is available")
        return requested
    raise ConfigError(f"device '{requested}' is not one of auto, cpu, cuda, cuda:N")


def resolve_dtype(requested: str, device: str) -> str:
    if requested == "auto":
        if device == "cpu":
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if requested not in _DTYPES:
        raise ConfigError(f"dtype '{requested}' is not one of auto, {', '.join(sorted(_DTYPES))}")
    return requested


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime providers for a device; CPU is always the fallback."""
    if device.startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
