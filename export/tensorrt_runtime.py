"""The TensorRT and the CUDA GPU this machine has, for building and for loading engines.

Both the builder (`onnx2trt`) and the loader (`engine_manifest.load_engine`) need them, and
neither may import the other's module for it; tensorrt and torch are imported only when called,
so machines without them can still write scripts and check manifests.
"""

from __future__ import annotations

from typing import Any

from synthmed.errors import UserInputError


class TensorRTUnavailableError(UserInputError):
    """TensorRT's Python builder/runtime cannot be imported on this machine."""


def import_tensorrt() -> Any:
    """The tensorrt module, or a one-line error saying where engines can be built."""
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: a wheel whose CUDA libraries are missing
        raise TensorRTUnavailableError(
            "TensorRT's builder is not installed here (import tensorrt failed); build engines in "
            "NVIDIA's TensorRT container (nvcr.io/nvidia/tensorrt) or run build_engines.sh "
            "(trtexec) on the target device"
        ) from err
    return tensorrt


def cuda_device() -> tuple[str, tuple[int, int]]:
    """Name and compute capability of the current CUDA device, through torch (the export extra)."""
    try:
        import torch
    except ImportError as err:
        raise TensorRTUnavailableError(
            "torch is needed to query the GPU; install synthmed[export]"
        ) from err
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("no CUDA GPU is visible; TensorRT engines need one")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), (int(major), int(minor))
