"""Which implementations exist on this installation, and which one a call uses."""

import importlib.util

import torch

from . import _ops

NAMES = ("cuda", "triton", "cpu", "reference")


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def backends() -> dict:
    """{"cpu": ..., "cuda": ..., "triton": ..., "reference": True}: True where that backend can
    run here.  cuda needs the compiled CUDA extension and a GPU; triton needs triton and a GPU
    (or TRITON_INTERPRET=1)."""
    gpu = torch.cuda.is_available()
    return {
        "cpu": _ops.COMPILED,
        "cuda": _ops.CUDA_BUILT and gpu,
        "triton": False,
        "reference": True,
    }


def check_backend_name(backend: str) -> None:
    if backend not in NAMES + ("auto",):
        raise ValueError(f"backend must be 'auto' or one of {NAMES}, got {backend!r}")


def resolve(backend: str, device: torch.device) -> str:
    """The backend that runs a call on tensors of this device ("auto": fastest available)."""
    check_backend_name(backend)
    available = backends()
    if backend == "auto":
        order = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
        return next((name for name in order if available[name]), "reference")
    if not available[backend]:
        have = [name for name, ok in available.items() if ok]
        raise RuntimeError(f"backend {backend!r} is not available here; available: {have}")
    wants_cuda = backend in ("cuda", "triton")
    if backend != "reference" and wants_cuda != (device.type == "cuda"):
        raise ValueError(f"backend {backend!r} cannot run on tensors on {device}")
    return backend
