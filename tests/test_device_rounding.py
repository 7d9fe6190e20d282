"""The CUDA kernels' per-element math rounds where it is written, whichever options nvcc sees
as constants (issue 18: channels_last results equal contiguous ones bit for bit).

An all-in-range step folds the options into constants; an in-range element next to a logit
beyond +-80 runs with them as run-time values (csrc/infodrop/elementwise.h, forward_step).
Left to itself nvcc contracted a product into a neighbouring sum differently in the two, so such
an element could differ in the last bit between the layouts, which group elements into steps
differently.  tests/device_rounding_harness.cu holds one element of the special-function path
both ways; compiled with nvcc's contraction on and off (-fmad) it must give the same SASS:
every multiply-add's rounding is then spelled in the source (elementwise.h's rn_* helpers),
none is left to nvcc, and folding the options cannot move one.  No GPU needed."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from benchmarks import sass

from ._helpers import headers_with_mutant

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "device_rounding_harness.cu"


def _nvcc():
    """$CUDA_HOME's nvcc (/usr/local/cuda's by default), else PATH's, as setup.py finds it."""
    home = pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(home) if home.exists() else shutil.which("nvcc")


NVCC = _nvcc()

pytestmark = pytest.mark.skipif(NVCC is None, reason="no nvcc to compile the harness")


def _sass(tmp_path, csrc, fmad):
    """The harness's SASS for sm_90, addresses and encodings dropped."""
    try:
        nvdisasm = sass.tool("nvdisasm")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    cubin = tmp_path / f"harness-{fmad}.cubin"
    subprocess.run([NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-cubin", f"-fmad={fmad}",
                    f"-I{csrc}", str(HARNESS), "-o", str(cubin)],
                   check=True, capture_output=True, text=True)
    text = subprocess.run([nvdisasm, "-c", str(cubin)], check=True, capture_output=True,
                          text=True).stdout
    return [re.sub(r"/\*[0-9a-f]*\*/", "", line).strip() for line in text.splitlines()
            if line.strip()]


def _contraction_changes_the_code(tmp_path, csrc):
    return _sass(tmp_path, csrc, "true") != _sass(tmp_path, csrc, "false")


def test_nvcc_contracts_nothing_in_the_element_math(tmp_path):
    fused, unfused = _sass(tmp_path, ROOT / "csrc", "true"), _sass(tmp_path, ROOT / "csrc", "false")
    assert any("FFMA" in line for line in fused)  # the multiply-adds are there, spelled out
    assert fused == unfused


# Expressions as they were before issue 18's fix, which left the rounding to nvcc.
MUTANTS = {
    "unit_mean's log noise": (
        "log_noise = rn_sub_mul(log_noise, E(S(0.5 * kEpsUnit<Math>)) * alpha, alpha);",
        "log_noise = log_noise - E(S(0.5 * kEpsUnit<Math>)) * alpha * alpha;"),
    "the gradient's KL term": (
        "grad_alpha = rn_add_mul(grad_alpha, grad_kl, dkl_dalpha);",
        "grad_alpha = grad_alpha + grad_kl * dkl_dalpha;"),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_the_harness_catches_a_multiply_add_left_to_nvcc(mutant, tmp_path):
    csrc = headers_with_mutant(tmp_path, *MUTANTS[mutant])
    assert _contraction_changes_the_code(tmp_path, csrc)
