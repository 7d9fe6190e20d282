"""The CUDA kernels take the log-uniform KL of a step's elements as one log of the product of
their alpha / cap where that product is a normal float, else a log per element
(csrc/infodrop/elementwise.h, minus_log_of_product; one special-function instruction per step in
place of 8).  Only a GPU runs the kernels, but the rule is host-device code:
tests/kl_product_harness.cpp checks it on the CPU against -sum(log r) in double, where the
product stays normal, underflows to zero, or to a subnormal whose few bits one log would take
as exact.  Mutants of the rule must fail it."""

import pathlib

import pytest

from ._helpers import headers_with_mutant, requires_cxx, run_header_harness

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "kl_product_harness.cpp"

pytestmark = requires_cxx


def _run(tmp_path, csrc):
    return run_header_harness(tmp_path, HARNESS, csrc)


def test_one_log_of_the_product_where_it_is_normal_else_a_log_per_element(tmp_path):
    out = _run(tmp_path, ROOT / "csrc").strip()
    assert out == f"ok {2 * (5 * 20000 + 19 + 2)}", out


MUTANTS = {
    "subnormal product taken as normal": ("product >= 0x1p-126f", "product > E(0)"),
    "no test: always one log": ("if (product >= 0x1p-126f) return", "if (true) return"),
    "a ratio left out of the product": (
        "for (int k = 1; k < V; ++k) product = rn_mul(product, r[k]);",
        "for (int k = 1; k + 1 < V; ++k) product = rn_mul(product, r[k]);"),
    "a ratio left out of the per-element sum": (
        "for (int k = 1; k < V; ++k) sum -= math.log(r[k]);",
        "for (int k = 2; k < V; ++k) sum -= math.log(r[k]);"),
}


@pytest.mark.parametrize("mutant", MUTANTS)
def test_the_harness_catches_a_broken_rule(mutant, tmp_path):
    csrc = headers_with_mutant(tmp_path, *MUTANTS[mutant])
    assert _run(tmp_path, csrc).startswith("FAIL")
