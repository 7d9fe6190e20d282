"""The Triton kernels compiled ahead of time for real GPU targets, sm_80 (A100) and sm_90 (H100),
without a GPU: the interpreter (tests/test_triton.py) checks the numerics but none of what the
GPU compiler checks, and an annotated global (`PHILOX_M0: tl.constexpr = ...`) ran under the
interpreter while every compile for a GPU failed with a NameError.  Every kernel, dtype and
prior, with the constexpr flags all on and all off, so that each branch compiles both ways, and
both layouts (channels-first and channels-last samples); and no register spills in any of them
(ptxas -v), with the triton that the pinned torch brings and with triton 3.6 (torch 2.11's), whose
register allocation differs (a venv with triton==3.6.0 that sees this venv's packages through a
.pth file runs this file with it; docs/performance.md, Triton section)."""

import importlib.util
import os

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if os.environ.get("TRITON_INTERPRET") == "1":
    # @triton.jit then makes interpreter functions, which have no GPU compile
    pytest.skip("TRITON_INTERPRET=1: nothing is compiled for a GPU", allow_module_level=True)

from benchmarks import sass  # noqa: E402
from infodrop.triton import aot  # noqa: E402

CAPABILITIES = (80, 90)


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: f"sm_{c}")
@pytest.mark.parametrize("variant", aot.variants(), ids=lambda v: v.label.replace(" ", "-"))
def test_kernel_compiles_to_a_cubin(variant, capability):
    compiled = aot.compile_variant(variant, capability)
    assert compiled.metadata.target.arch == capability
    assert f".target sm_{capability}" in compiled.asm["ptx"]
    assert compiled.asm["cubin"][:4] == b"\x7fELF"
    spill_stores, spill_loads, _ = sass.ptxas_spills(compiled.asm["ptx"])
    assert (spill_stores, spill_loads) == (0, 0)


def test_variants_cover_every_kernel_dtype_prior_layout_and_flag_both_ways():
    variants = aot.variants()
    assert {v.kernel for v in variants} == {"forward_kernel", "backward_kernel", "noise_kernel",
                                            "prior_grads_kernel"}
    for kernel in ("forward_kernel", "backward_kernel"):
        for dtype in aot.DTYPES:
            for prior in aot.PRIORS:
                compiled = [v.constexprs() for v in variants
                            if (v.kernel, v.dtype, v.prior) == (kernel, dtype, prior)]
                for flag in aot.FLAGS + ("CHANNELS_LAST", "ALIGNED"):
                    assert {c[flag] for c in compiled} == {True, False}, (kernel, dtype, prior)
        assert {v.channels_last for v in variants if v.kernel == kernel and v.wide} == {True, False}


def test_kernels_compile_for_says_yes_for_sm_90_and_why_not_otherwise(monkeypatch):
    assert aot.kernels_compile_for(90) == (True, "")

    def broken(variant, capability):
        raise RuntimeError("ptxas fatal: something\nmore detail")

    monkeypatch.setattr(aot, "compile_variant", broken)
    ok, why = aot.kernels_compile_for.__wrapped__(86)  # past the cache
    assert not ok
    assert why == ("forward_kernel does not compile for sm_86: RuntimeError: ptxas fatal: "
                   "something more detail")
