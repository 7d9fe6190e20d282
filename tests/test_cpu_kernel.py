"""The fused CPU kernels against the reference, given the same noise stream."""

import itertools
import os
import subprocess
import sys

import pytest
import torch

import infodrop
from infodrop import reference

from ._helpers import TOLERANCE, make_inputs, requires_compiled

pytestmark = requires_compiled

SEED, OFFSET = 31337, 11
# shapes with ragged heads and tails around the 4-element groups, the SIMD blocks and the
# 16384-element chunks (a sample that spans several chunks), and 1-element samples
SHAPES = [(5,), (3, 7), (2, 3, 5, 7), (4, 1000), (2, 16384 + 70), (1, 3, 33, 33)]
OPTIONS = [
    dict(),
    dict(prior="log_normal"),
    dict(prior="log_normal", mu=0.4, sigma=1.7),
    dict(mask_inactive=True),
    dict(unit_mean=True),
    dict(training=False),
    dict(training=False, noise_in_eval=True),
    dict(max_alpha=1.0, alpha_min=0.0),
]


def fused_and_reference(x, logit, **options):
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, offset=OFFSET, backend="cpu", **options)
    eps = infodrop.noise(x.shape, SEED, OFFSET, dtype=torch.float64)
    z_ref, kl_ref = reference.information_dropout(x.double(), logit.double(), eps, **options)
    return z, kl, z_ref, kl_ref


def assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_forward_matches_reference(dtype, options):
    for shape in SHAPES:
        x, logit = make_inputs(shape, dtype, prior=options.get("prior", "log_uniform"), zeros=0.2)
        z, kl, z_ref, kl_ref = fused_and_reference(x, logit, **options)
        assert z.dtype == dtype and z.shape == x.shape
        assert kl.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(z, z_ref, dtype)
        # kl sums per_sample elements: its tolerance grows with the sum
        per_sample = x[0].numel()
        rtol = TOLERANCE[dtype if dtype in (torch.float32, torch.float64) else torch.float32][0]
        torch.testing.assert_close(kl.double(), kl_ref, rtol=rtol * 10, atol=1e-4 * per_sample**0.5)


def _reference_grads(x, logit, grad_z, grad_kl, mu, sigma, options):
    xr = x.double().clone().requires_grad_()
    lr = logit.double().clone().requires_grad_()
    mur = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
    sigmar = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    eps = infodrop.noise(x.shape, SEED, OFFSET, dtype=torch.float64)
    z, kl = reference.information_dropout(xr, lr, eps, mu=mur, sigma=sigmar, **options)
    torch.autograd.backward((z, kl), (grad_z.double(), grad_kl.double()))
    return xr.grad, lr.grad, mur.grad, sigmar.grad


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_backward_matches_autograd_of_reference(dtype, options):
    options = dict(options)
    mu, sigma = options.pop("mu", 0.0), options.pop("sigma", 1.0)
    for shape in SHAPES[:5]:
        x, logit = make_inputs(shape, dtype, seed=1, prior=options.get("prior", "log_uniform"), zeros=0.2)
        g = torch.Generator().manual_seed(2)
        grad_z = torch.randn(shape, generator=g).to(dtype)
        grad_kl = torch.randn(shape[0], generator=g)
        xf, lf = x.clone().requires_grad_(), logit.clone().requires_grad_()
        muf = torch.tensor(mu, requires_grad=True)
        sigmaf = torch.tensor(sigma, requires_grad=True)
        z, kl = infodrop.information_dropout(xf, lf, mu=muf, sigma=sigmaf, seed=SEED,
                                             offset=OFFSET, backend="cpu", **options)
        torch.autograd.backward((z, kl), (grad_z, grad_kl.to(kl.dtype)))
        want = _reference_grads(x, logit, grad_z, grad_kl, mu, sigma, options)
        assert_close(xf.grad, want[0], dtype, scale=10)
        assert_close(lf.grad, want[1], dtype, scale=10)
        n = x.numel()
        if options.get("prior") == "log_normal":
            torch.testing.assert_close(muf.grad.double(), want[2], rtol=1e-3, atol=1e-4 * n**0.5)
            torch.testing.assert_close(sigmaf.grad.double(), want[3], rtol=1e-3, atol=1e-4 * n**0.5)
        else:
            assert muf.grad is None or muf.grad == 0


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_non_contiguous_inputs_use_logical_order(layout):
    x, logit = make_inputs((2, 6, 5, 7), torch.float32)
    if layout == "channels_last":
        xs, ls = (t.contiguous(memory_format=torch.channels_last) for t in (x, logit))
    elif layout == "transposed":
        xs, ls = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (x, logit))
    else:
        xs, ls = (torch.cat([t, t], dim=3)[..., ::2][..., :7] for t in (x, logit))
        x, logit = xs.contiguous(), ls.contiguous()
    assert not xs.is_contiguous()
    z, kl = infodrop.information_dropout(xs, ls, seed=SEED, backend="cpu")
    z_c, kl_c = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
    torch.testing.assert_close(z, z_c, rtol=0, atol=0)
    torch.testing.assert_close(kl, kl_c, rtol=0, atol=0)
    if layout == "channels_last":
        assert z.is_contiguous(memory_format=torch.channels_last)


def test_expanded_grad_is_accepted():
    """sum().backward() hands the op an expanded (stride 0) grad_z."""
    x, logit = make_inputs((3, 40), torch.float32)
    x.requires_grad_()
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
    z.sum().backward()
    eps = infodrop.noise(x.shape, SEED, 0)
    alpha = 1e-3 + 0.7 * torch.sigmoid(logit)
    torch.testing.assert_close(x.grad, torch.exp(alpha * eps), rtol=2e-5, atol=2e-5)


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


def test_empty_tensors_give_empty_results():
    for shape in [(0, 5), (3, 0), (0,)]:
        x = torch.rand(shape)
        z, kl = infodrop.information_dropout(x, torch.zeros(shape), seed=1, backend="cpu")
        assert z.shape == x.shape and kl.shape == (shape[0],)
        assert (kl == 0).all()


def test_nan_input_propagates():
    x, logit = make_inputs((2, 40), torch.float32)
    logit[0, 3] = float("nan")
    x[1, 5] = float("nan")
    z, kl = infodrop.information_dropout(x, logit, seed=SEED, backend="cpu")
    assert z[0, 3].isnan() and z[1, 5].isnan() and kl[0].isnan()
    assert not z[0, :3].isnan().any()


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
