"""What the tests share beyond infodrop.testing (inputs, dtypes, tolerances): skip markers and
the (backend, device) pairs that run here."""

import os
import pathlib
import shutil
import subprocess

import pytest
import torch

import infodrop

requires_compiled = pytest.mark.skipif(not infodrop.backends()["cpu"],
                                       reason="the compiled CPU extension is not built")

# The host compiler of the tests' C++ harnesses (tests/*_harness.cpp)
CXX = shutil.which("g++") or shutil.which("c++")
requires_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) to build the harness")


def interpreted():
    """Triton runs its kernels on the CPU (numpy): tests/test_triton.py runs the cross-backend
    tests again in a subprocess with TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def backend_devices():
    """The (backend, device) pairs whose kernels run here: the compiled CPU kernels always
    (where built), cuda and triton on a GPU, triton on the CPU under the interpreter."""
    available, gpu = infodrop.backends(), torch.cuda.is_available()
    pairs = []
    if available["cpu"] and not interpreted():
        pairs.append(pytest.param(("cpu", "cpu"), id="cpu-cpu"))
    pairs += [pytest.param((name, "cuda"), marks=pytest.mark.cuda, id=f"{name}-cuda")
              for name in ("cuda", "triton") if gpu and available[name]]
    if not gpu and available["triton"] and interpreted():
        pairs.append(pytest.param(("triton", "cpu"), id="triton-cpu"))
    return pairs


def aten_ops_run_by(fn):
    """The names of the aten ops that fn() runs, nested ones included (those a C++ kernel calls
    as well as those Python code calls), from the CPU side of a torch.profiler trace."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
        fn()
    return {event.name for event in trace.events() if event.name.startswith("aten::")}


def run_header_harness(tmp_path, harness, csrc):
    """Build the C++ harness file `harness` against the headers under `csrc` (the tree's, or a
    copy from headers_with_mutant) in tmp_path and run it: its standard output."""
    binary = tmp_path / "harness"
    subprocess.run([CXX, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{csrc}", str(harness),
                    "-o", str(binary)], check=True, capture_output=True, text=True)
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=60).stdout


def headers_with_mutant(tmp_path, original, broken):
    """A copy of csrc/infodrop under tmp_path/csrc with `original` in elementwise.h replaced by
    `broken`, for the harness tests that must catch a broken element function; returns the
    copy's csrc.  `original` must occur once, so that a changed header updates the mutant."""
    csrc = tmp_path / "csrc"
    shutil.copytree(pathlib.Path(__file__).resolve().parents[1] / "csrc" / "infodrop",
                    csrc / "infodrop")
    header = csrc / "infodrop" / "elementwise.h"
    source = header.read_text()
    assert source.count(original) == 1, f"elementwise.h changed: update the mutant {original!r}"
    header.write_text(source.replace(original, broken))
    return csrc
