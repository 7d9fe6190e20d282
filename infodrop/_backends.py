"""Which implementations exist on this installation, and which one a call uses."""

import functools
import importlib.util
import os

import torch

from . import _ops

NAMES = ("cuda", "triton", "cpu", "reference")


# What resolve() needs to know of the installation, decided once at import: resolve() runs
# inside the code that torch.compile traces (every layer call), where dynamo refuses or merely
# tolerates importlib, lru_cache wrappers and environment reads (torch 2.11 fails
# fullgraph=True on importlib.util.find_spec).  Constants are read as constants of the graph.
# TRITON_IMPORTABLE: find_spec walks the import path with filesystem calls (~25 us), which every
# layer call paid when backend resolution asked it.
TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None
# Triton runs its kernels on the CPU (numpy) when TRITON_INTERPRET=1: slow, for tests.  Triton
# itself reads it when it is imported, so a later change of the environment changes nothing.
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def backends(detail: bool = False) -> dict:
    """{"cpu": ..., "cuda": ..., "triton": ..., "reference": True}: True where that backend can
    run here.  cuda needs the compiled CUDA extension and a GPU; triton needs triton and a GPU
    (or TRITON_INTERPRET=1).

    detail=True gives, per backend, {"runs": bool, "built": bool, "why": str}: "built" says
    whether the code is installed (the extension compiled, triton importable) even where it
    cannot run, and "why" says what is missing ("" where it runs).  triton's entry also has
    "compiles": whether its kernels compile for the visible GPU's architecture,
    {"arch": "sm_90", "ok": bool, "why": str}, or None without a GPU or triton (a few seconds,
    once per process: importing triton does not show that it supports the GPU)."""
    gpu = torch.cuda.is_available()
    triton_importable = TRITON_IMPORTABLE
    built = {name: _built(name) for name in NAMES}
    runs = {
        "cpu": built["cpu"],
        "cuda": built["cuda"] and gpu,
        "triton": triton_importable and (gpu or TRITON_INTERPRETED),
        "reference": True,
    }
    if not detail:
        return runs
    missing = {
        "cpu": f"the C++ extension did not load ({_ops.COMPILED_ERROR})",
        "cuda": ("no CUDA GPU is visible" if built["cuda"] else
                 "infodrop._C_cuda was not built (torch without CUDA, no nvcc, or INFODROP_CUDA=0)"),
        "triton": ("no CUDA GPU is visible and TRITON_INTERPRET is not 1" if triton_importable
                   else "triton is not installed"),
        "reference": "",
    }
    out = {name: {"runs": runs[name], "built": built[name], "why": "" if runs[name] else missing[name]}
           for name in runs}
    out["triton"]["compiles"] = _triton_compiles_for_gpu() if gpu and triton_importable else None
    return out


@functools.lru_cache(maxsize=1)
def _triton_compiles_for_gpu() -> dict:
    major, minor = torch.cuda.get_device_capability()
    from .triton.aot import kernels_compile_for  # imports triton: only on this detail path

    ok, why = kernels_compile_for(10 * major + minor)
    return {"arch": f"sm_{major}{minor}", "ok": ok, "why": why}


def check_backend_name(backend: str) -> None:
    if backend not in NAMES + ("auto",):
        raise ValueError(f"backend must be 'auto' or one of {NAMES}, got {backend!r}")


def _built(backend: str) -> bool:
    """Whether the backend's code is installed here (compiled, or triton importable)."""
    if backend == "triton":
        return TRITON_IMPORTABLE
    if backend == "cuda":
        return _ops.CUDA_BUILT
    return _ops.COMPILED if backend == "cpu" else True


def _runs_on(backend: str, device: torch.device) -> bool:
    if backend == "reference":
        return True
    if backend == "triton":  # CPU tensors only in the interpreter
        return device.type == "cuda" or TRITON_INTERPRETED
    return device.type == ("cuda" if backend == "cuda" else "cpu")


def _auto(device: torch.device) -> str:
    """The fastest backend for tensors on ``device`` (the Triton interpreter is never chosen
    automatically).  Tensors on a CUDA device mean a GPU is there: no availability query."""
    if device.type == "cpu":
        return "cpu" if _ops.COMPILED else "reference"
    if device.type == "cuda":
        if _ops.CUDA_BUILT:
            return "cuda"
        return "triton" if TRITON_IMPORTABLE else "reference"
    return "reference"


def picks_cuda(backend: str, device: torch.device) -> bool:
    """Whether a call with this backend on tensors of ``device`` goes to the CUDA op: without
    resolve()'s errors (the call itself raises them, naming its layer)."""
    return (_auto(device) if backend == "auto" else backend) == "cuda"


def resolve(backend: str, device: torch.device, *, tensors_on_device: bool = True) -> str:
    """The backend that runs a call on tensors of this device ("auto": the fastest available of
    cuda > triton > cpu > reference that runs on that device).  ``tensors_on_device=False``
    where the call has no tensors there yet (noise() takes a device by name): an explicit
    backend is then checked against what this machine has, as it would be without a GPU."""
    if backend == "auto":
        return _auto(device)
    check_backend_name(backend)
    if tensors_on_device and _runs_on(backend, device) and _built(backend):
        # then it is available: tensors on a CUDA device mean a GPU is there (no query per
        # call: backends() asks the driver and builds a dict, a few us of every call)
        return backend
    available = backends()
    if not available[backend]:
        have = [name for name, ok in available.items() if ok]
        raise RuntimeError(f"backend {backend!r} is not available here; available: {have}")
    if not _runs_on(backend, device):
        raise ValueError(f"backend {backend!r} cannot run on tensors on {device}")
    return backend
