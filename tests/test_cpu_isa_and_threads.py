"""What only the CPU kernels have: one kernel per instruction set chosen at run time (each
checked against the reference), and a KL reduction that does not depend on the thread count.
(Their numerics against the reference: tests/test_backend_numerics.py.)"""

import os
import subprocess
import sys

import pytest
import torch

import infodrop
from infodrop.testing import make_inputs

from ._helpers import requires_compiled

pytestmark = requires_compiled

SEED = 31337


def test_results_do_not_depend_on_thread_count():
    x, logit = make_inputs((3, 50_000), torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        z1, kl1 = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
        torch.set_num_threads(2)
        z2, kl2 = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(z1, z2) and torch.equal(kl1, kl2)


ISA_SCRIPT = """
import torch, infodrop
from infodrop import reference
print(torch.ops.infodrop.cpu_isa())
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1037, generator=g) * 3).to(dtype)
    logit = (torch.randn(3, 1037, generator=g) * 3).to(dtype)
    for prior in ("log_uniform", "log_normal"):
        xr, lr = x.double().clone().requires_grad_(), logit.double().clone().requires_grad_()
        eps = reference.noise(x.shape, 5, 6, dtype=torch.float64)
        z_ref, kl_ref = reference.information_dropout(xr, lr, eps, prior=prior)
        (z_ref.sum() + kl_ref.sum()).backward()
        xf, lf = x.clone().requires_grad_(), logit.clone().requires_grad_()
        z, kl = infodrop.information_dropout(xf, lf, seed=5, offset=6, prior=prior, backend="cpu")
        (z.sum() + kl.sum()).backward()
        rel = lambda a, b: ((a.double() - b) / (1 + b.abs())).abs().max().item()
        print(dtype, prior, max(rel(z, z_ref), rel(kl, kl_ref), rel(xf.grad, xr.grad), rel(lf.grad, lr.grad)))
"""


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_every_instruction_set_matches_reference(isa):
    flags = _cpu_flags()
    needs = {"avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"}, "avx2": {"avx2", "fma", "f16c"}}
    if not needs.get(isa, set()) <= flags:
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    env = dict(os.environ, INFODROP_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", ISA_SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[0] == isa
    budget = {"torch.float32": 1e-4, "torch.float64": 1e-4, "torch.float16": 3e-3, "torch.bfloat16": 2e-2}
    for line in filter(None, out[1:]):
        dtype, prior, err = line.split()
        assert float(err) < budget[dtype], line


def test_unknown_isa_request_is_an_error():
    env = dict(os.environ, INFODROP_CPU_ISA="sse9")
    run = subprocess.run([sys.executable, "-c", "import torch, infodrop; "
                          "infodrop.information_dropout(torch.ones(1, 4), torch.ones(1, 4))"],
                         env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "INFODROP_CPU_ISA" in run.stderr
