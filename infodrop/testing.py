"""Inputs, dtypes and tolerances shared by the tests, `python -m infodrop check` and the
benchmarks: one definition of what "a layer's input" and "close enough" mean."""

import torch

from ._spec import kl_dtype

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}

# (rtol, atol) of a fused backend's z against the reference, per dtype (gradients: 10x atol):
# float32 is limited by the 2^-20 approximations (docs/spec.md section 5), float64 too (eps is
# float32 math for every dtype), the half types by one rounding of z to 11 or 8 bits.
TOLERANCE = {
    torch.float32: (2e-5, 2e-5),
    torch.float64: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
# max |error| / (1 + |reference|) over z, kl and both gradients, per dtype: the one number per
# row that `python -m infodrop check` reports (float32: the 2^-20 approximations summed over a
# few operations; the half types: one rounding of z and of the gradients).
RELATIVE_ERROR_BUDGET = {torch.float32: 1e-4, torch.float64: 1e-4, torch.float16: 5e-3,
                         torch.bfloat16: 3e-2}


def make_inputs(shape, dtype=torch.float32, *, seed=0, generator=None, prior="log_uniform",
                zeros=0.0, device="cpu"):
    """(x, alpha_logit): x >= 0 as after a ReLU (log_uniform) or x > 0 after a Softplus
    (log_normal), with a fraction ``zeros`` of exact zeros, and logits spanning the sigmoid's
    range.  Drawn in float64 from ``generator`` (or a fresh one seeded with ``seed``)."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 3
    if prior == "log_normal":
        x = torch.nn.functional.softplus(torch.randn(shape, generator=g, dtype=torch.float64) * 2)
    if zeros:
        x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < zeros, 0.0, x)
    logit = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    return x.to(device, dtype), logit.to(device, dtype)


def make_grads(shape, dtype=torch.float32, *, seed=0, generator=None, device="cpu"):
    """(grad_z, grad_kl): the gradients a loss hands the layer's two outputs."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    grad_z = torch.randn(shape, generator=g, dtype=torch.float64)
    grad_kl = torch.randn(shape[0], generator=g, dtype=torch.float64)
    return grad_z.to(device, dtype), grad_kl.to(device, kl_dtype(dtype))
