"""The CUDA kernels decide per element which math an element takes (the special-function path
where |logit| <= 80, else the IEEE path), and a whole step or channels-last tile skips the
per-element tests only where all its elements would pass: tests/device_range_harness.cpp
checks on the CPU that the step's one test (csrc/infodrop/elementwise.h) agrees with the
elements' own tests, NaN and the bound included, for 4 and 8 elements.  Were it to differ, the
contiguous and channels-last kernels, which group different elements, could give one element
different bits (tests/test_cuda_layouts.py checks those bits on a GPU)."""

import pathlib

import pytest

from ._helpers import headers_with_mutant, requires_cxx, run_header_harness

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "device_range_harness.cpp"

pytestmark = requires_cxx


def _run(tmp_path, csrc):
    return run_header_harness(tmp_path, HARNESS, csrc)


def test_a_step_skips_the_per_element_tests_exactly_where_every_element_is_in_range(tmp_path):
    assert _run(tmp_path, ROOT / "csrc").strip() == f"ok {12 ** 4 + 36 * 12 * 12}"


# Step tests that would let a step with an element outside take the special-function path.
MUTANTS = {
    "a NaN kept as the largest": ("most = fmaxf(most, fabsf(logit[k]))",
                                  "most = !(fabsf(logit[k]) <= most) ? fabsf(logit[k]) : most"),
    "last element not looked at": ("for (int k = 1; k < V; ++k) most",
                                   "for (int k = 1; k + 1 < V; ++k) most"),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_the_harness_catches_a_step_test_that_disagrees(mutant, tmp_path):
    csrc = headers_with_mutant(tmp_path, *MUTANTS[mutant])
    assert _run(tmp_path, csrc).startswith("FAIL")
