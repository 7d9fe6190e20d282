"""python -m infodrop check: every available backend against the pure-PyTorch reference.

For each backend that can run on --device, fresh random inputs, both priors and each dtype:
the largest error of z, the per-sample KL, grad_x and grad_alpha_logit against the reference
(autograd through it, float64, fed the same noise stream), and torch.autograd.gradcheck of the
backend in float64.  Exits non-zero when an error exceeds its dtype's tolerance.
"""

import argparse

import torch

from . import functional, reference
from ._backends import NAMES, backends
from ._spec import PRIORS
from .testing import DTYPES, RELATIVE_ERROR_BUDGET, make_grads, make_inputs

SEED, OFFSET = 2016, 1


def _relative_error(actual, expected):
    return ((actual.double() - expected) / (1 + expected.abs())).abs().max().item()


def compare(backend, shape, dtype, prior, device, generator):
    """Max relative errors (z, kl, grad_x, grad_alpha_logit) of one backend against the reference."""
    x, logit = make_inputs(shape, dtype, generator=generator, prior=prior, device=device)
    grad_z, grad_kl = make_grads(shape, dtype, generator=generator, device=device)
    xb, lb = x.clone().requires_grad_(), logit.clone().requires_grad_()
    z, kl = functional.information_dropout(xb, lb, prior=prior, seed=SEED, offset=OFFSET,
                                           backend=backend)
    torch.autograd.backward((z, kl), (grad_z, grad_kl))
    xr = x.double().clone().requires_grad_()
    lr = logit.double().clone().requires_grad_()
    eps = functional.noise(shape, SEED, OFFSET, device=device, dtype=torch.float64)
    z_ref, kl_ref = reference.information_dropout(xr, lr, eps, prior=prior)
    torch.autograd.backward((z_ref, kl_ref), (grad_z.double(), grad_kl.double()))
    return [_relative_error(a, b) for a, b in ((z, z_ref), (kl, kl_ref), (xb.grad, xr.grad),
                                              (lb.grad, lr.grad))]


def gradcheck(backend, prior, device):
    g = torch.Generator().manual_seed(0)
    x, logit = make_inputs((2, 3, 4), torch.float64, generator=g, prior=prior, device=device)
    x = (x + 0.05).requires_grad_()  # away from the kinks at 0 and at the log-normal floor
    logit.requires_grad_()

    def f(x, logit):
        return functional.information_dropout(x, logit, prior=prior, seed=SEED, backend=backend)

    try:
        return torch.autograd.gradcheck(f, (x, logit))
    except RuntimeError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infodrop check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 16, 9, 7],
                        help="input shape, batch first (default: 8 16 9 7)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if any(n < 0 for n in args.shape):
        parser.error("--shape: sizes must be >= 0")
    device = torch.device(args.device)
    available = backends()
    runnable = [name for name in NAMES if available[name]
                and (name == "reference" or (name in ("cuda", "triton")) == (device.type == "cuda"))]
    generator = torch.Generator().manual_seed(args.seed)
    print(f"infodrop check on {device}, shape {tuple(args.shape)}; errors are max |a - ref| / "
          "(1 + |ref|) against autograd of the float64 reference")
    header = (f"{'backend':<10} {'dtype':<9} {'prior':<12} {'z':>9} {'kl':>9} {'grad_x':>9} "
              f"{'grad_logit':>10}  ok")
    print(header)
    print("-" * len(header))
    failed = False
    for name in runnable:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            for prior in PRIORS:
                errors = compare(name, tuple(args.shape), dtype, prior, device, generator)
                ok = max(errors) <= RELATIVE_ERROR_BUDGET[dtype]
                failed |= not ok
                print(f"{name:<10} {dtype_name:<9} {prior:<12} " +
                      " ".join(f"{e:9.2e}" for e in errors[:3]) + f" {errors[3]:10.2e}  " +
                      ("yes" if ok else "NO"))
    print()
    for name in runnable:
        for prior in PRIORS:
            passed = gradcheck(name, prior, device)
            failed |= not passed
            print(f"gradcheck {name:<10} {prior:<12} float64: {'passed' if passed else 'FAILED'}")
    return 1 if failed else 0
